// CDonutBridge has no API of its own. It gives Swift the values of MPI and HDF5
// macros (handles such as MPI_COMM_WORLD, H5P_DEFAULT, H5T_NATIVE_FLOAT) that the
// Swift importer cannot see, as `static inline` accessors. The HDF5 type and
// property-class macros call H5open() underneath, so the accessors do too.
#ifndef CDONUTBRIDGE_H
#define CDONUTBRIDGE_H
#include <mpi.h>
#include <hdf5.h>

// MARK: MPI handles and constants
static inline MPI_Comm donut_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm donut_mpi_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype donut_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype donut_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype donut_mpi_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Datatype donut_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype donut_mpi_int(void) { return MPI_INT; }
static inline MPI_Datatype donut_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op donut_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op donut_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op donut_mpi_min(void) { return MPI_MIN; }
static inline MPI_Op donut_mpi_land(void) { return MPI_LAND; }
static inline MPI_Info donut_mpi_info_null(void) { return MPI_INFO_NULL; }
static inline void *donut_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline int donut_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int donut_mpi_success(void) { return MPI_SUCCESS; }

// MARK: HDF5 constants
static inline hid_t donut_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t donut_h5s_all(void) { return H5S_ALL; }
static inline hid_t donut_h5e_default(void) { return H5E_DEFAULT; }
static inline unsigned donut_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline unsigned donut_h5f_acc_excl(void) { return H5F_ACC_EXCL; }
static inline unsigned donut_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned donut_h5f_acc_rdwr(void) { return H5F_ACC_RDWR; }
static inline hid_t donut_h5p_file_access(void) { return H5P_FILE_ACCESS; }
static inline hid_t donut_h5p_file_create(void) { return H5P_FILE_CREATE; }
static inline hid_t donut_h5p_dataset_xfer(void) { return H5P_DATASET_XFER; }
static inline hid_t donut_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t donut_h5p_link_create(void) { return H5P_LINK_CREATE; }
static inline hid_t donut_h5p_dataset_access(void) { return H5P_DATASET_ACCESS; }
static inline hid_t donut_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t donut_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t donut_h5t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t donut_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t donut_h5t_native_uint64(void) { return H5T_NATIVE_UINT64; }
static inline hid_t donut_h5t_native_uint16(void) { return H5T_NATIVE_UINT16; }
static inline hid_t donut_h5t_native_uint32(void) { return H5T_NATIVE_UINT32; }
static inline hid_t donut_h5t_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t donut_h5t_c_s1(void) { return H5T_C_S1; }
static inline size_t donut_h5t_variable(void) { return H5T_VARIABLE; }

/// Sets the MPI-IO file driver on a file-access list (parallel HDF5 only).
static inline herr_t donut_h5_set_fapl_mpio(hid_t fapl, MPI_Comm comm) {
    return H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
}
/// Collective (1) or independent (0) MPI-IO transfers on a dataset-transfer list.
static inline herr_t donut_h5_set_dxpl_mpio(hid_t dxpl, int collective) {
    return H5Pset_dxpl_mpio(dxpl, collective ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT);
}

#endif

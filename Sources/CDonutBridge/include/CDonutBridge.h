// CDonutBridge has no API of its own. It gives Swift the values of MPI and HDF5
// macros (handles such as MPI_COMM_WORLD, H5P_DEFAULT, H5T_NATIVE_FLOAT) that the
// Swift importer cannot see, as `static inline` accessors.
#ifndef CDONUTBRIDGE_H
#define CDONUTBRIDGE_H
#include <mpi.h>
#include <hdf5.h>

static inline MPI_Comm donut_mpi_comm_world(void) { return MPI_COMM_WORLD; }

#endif

// DonutIO: one file per format.
//   HDF5.swift          H5File / H5Dataset handle types (serial + MPI-IO), DonutIOError,
//                       flat-range hyperslab selection (flatRangeBoxes, FlatSelection)
//   AtomicOutput.swift  no overwrite without --force; temporary name + rename
//   NeXusProcess.swift  root/NXentry attributes and /entry/process shared by all files
//   ScanFiles.swift     ScanReader (HDF5 or .npy; ROI + binning; checksums), ScanWriter
//   LibraryFiles.swift  LibraryWriter (parallel slabs), LibraryReader
//   ResultMaps.swift    ResultMapsWriter (collective NeXus maps), ResultMapsReader
//   Npy.swift           NpyFile reader/writer
import CDonutBridge
import DonutMPI

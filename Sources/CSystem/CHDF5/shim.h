// Build-flag carrier only: pkg-config hdf5-openmpi supplies the include and link paths.
#include <hdf5.h>

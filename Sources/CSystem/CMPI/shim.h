// Build-flag carrier only: pkg-config ompi-c supplies the include and link paths.
#include <mpi.h>

// CBLAS has no API of its own: it exposes OpenBLAS's cblas.h to Swift.
// Include path comes from `pkg-config --cflags openblas` (Debian: openblas-pthread).
#include <cblas.h>

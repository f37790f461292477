// Build-flag carrier only: pkg-config libpng supplies the include and link paths
// (Debian: libpng-dev). Donut uses libpng's simplified API (png_image_*).
#include <png.h>

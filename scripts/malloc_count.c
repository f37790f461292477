// Prints the heap allocations of a process at exit to stderr: "malloc_count: N allocations".
// Built with Tests/CAllocationCounter/AllocationCounter.c (the counter of the in-process
// AllocationTests: malloc, calloc, realloc and the aligned forms Swift uses for over-aligned
// objects) into an LD_PRELOAD library by scripts/check-allocations.
#include "AllocationCounter.h"

#include <stdio.h>
#include <unistd.h>

__attribute__((destructor)) static void report(void) {
    char line[64];
    int len = snprintf(line, sizeof line, "malloc_count: %lu allocations\n", allocation_count());
    if (len > 0) write(2, line, (size_t)len);
}

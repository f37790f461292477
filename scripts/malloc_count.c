// Counts heap allocations of a process (LD_PRELOAD) and prints the total at exit to stderr:
//   "malloc_count: N allocations"
// Used by scripts/check-allocations to show that a training step allocates nothing: the
// count of a run with 2N steps minus that of a run with N steps, divided by N.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static atomic_long count;
static void *(*real_malloc)(size_t), *(*real_calloc)(size_t, size_t), *(*real_realloc)(void *, size_t);
// dlsym may itself call calloc before real_calloc is known: serve it from a static arena.
static char arena[4096];
static size_t arena_used;

void *malloc(size_t n) {
    if (!real_malloc) real_malloc = dlsym(RTLD_NEXT, "malloc");
    atomic_fetch_add(&count, 1);
    return real_malloc(n);
}
void *calloc(size_t a, size_t b) {
    if (!real_calloc) {
        static int resolving;
        if (resolving) { void *p = arena + arena_used; arena_used += (a * b + 15) & ~15UL; return p; }
        resolving = 1; real_calloc = dlsym(RTLD_NEXT, "calloc"); resolving = 0;
    }
    atomic_fetch_add(&count, 1);
    return real_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    if (!real_realloc) real_realloc = dlsym(RTLD_NEXT, "realloc");
    atomic_fetch_add(&count, 1);
    return real_realloc(p, n);
}
__attribute__((destructor)) static void report(void) {
    char line[64];
    int len = snprintf(line, sizeof line, "malloc_count: %ld allocations\n", atomic_load(&count));
    write(2, line, len);
}

// Counts the heap allocations of the whole test process, for the tests that check that a
// training step allocates nothing. Linked into the test executable only: its definitions of
// malloc & co. take the place of the C library's for every library of the process (the
// executable comes first in symbol lookup) and forward to glibc's own (__libc_malloc …).
#ifndef ALLOCATION_COUNTER_H
#define ALLOCATION_COUNTER_H

/// Allocations (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, valloc,
/// pvalloc calls) by every thread since the process started.
unsigned long allocation_count(void);

#endif

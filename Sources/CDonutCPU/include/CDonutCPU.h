#ifndef CDONUTCPU_H
#define CDONUTCPU_H

/// 1 if this x86-64 CPU and the OS support AVX2 and FMA (CPUID leaves 1 and 7, and XCR0 with the
/// YMM state enabled), else 0 (also on other architectures). Decides whether the kernels of
/// `DonutKernelsAVX2` may run.
int donut_cpu_has_avx2_fma(void);

#endif

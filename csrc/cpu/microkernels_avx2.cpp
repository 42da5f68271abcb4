// The AVX2 + FMA micro-kernels: 32-byte vectors. Built on x86-64 only, for CPUs that report both features
// (microkernels.cpp checks before choosing them); the rest of the extension keeps the baseline target.
#include "microkernels.h"

#if defined(FASTCONV_CPU_AVX2)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif

#define FASTCONV_ISA avx2
#define FASTCONV_VECTOR_BYTES 32
#include "microkernels_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif

#endif

// Portability macros shared by the CPU (.cpp) and CUDA (.cu) translation units.
#pragma once

// Per-element math in csrc/common is written once and called from both the CPU kernels and the CUDA
// kernels, so the CPU tests exercise the arithmetic the GPU runs.
#if defined(__CUDACC__)
#define FASTCONV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTCONV_HOST_DEVICE inline
#endif

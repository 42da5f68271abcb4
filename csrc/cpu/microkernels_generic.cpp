// The portable micro-kernels: 16-byte vectors (SSE2 on x86-64, NEON on AArch64), for any CPU.
#define FASTCONV_ISA generic
#define FASTCONV_VECTOR_BYTES 16
#include "microkernels_impl.h"

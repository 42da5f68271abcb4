// The two inner loops every CPU kernel is built from, compiled once per instruction set
// (microkernels_generic.cpp, microkernels_avx2.cpp) and chosen at run time from the CPU's features, so that
// one build runs fast on AVX2 machines and still runs on the others.
//
// They work on accumulator-type data only (float, or double for float64 inputs): the op kernels convert
// half/bfloat16 tiles to float on the way in and round once on the way out. This header must stay free of
// torch headers: the AVX2 translation unit includes it under a target pragma.
#pragma once

#include <cstdint>

#include "../common/activation.h"

// The AVX2 kernels exist on x86-64 with a compiler that has per-function targets.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTCONV_CPU_AVX2 1
#endif

namespace fastconv::cpu {

// C[m, n] = A[m, k] * B[k, n], or C += A * B when `accumulate`; then, when `bias` is given,
// C = act(C + bias[n]) (the epilogue fused into the GEMM's stores, for intermediates that stay in acc_t).
//
// The rows may come in groups (the pixels of one image row): row r lies in group r / group, at
// a + (r / group) * a_group_step + (r % group) * lda, and likewise in C. A GEMM over the rows of a zero-padded
// plane thereby skips the padding between image rows. Without groups (group == 0) row r is at a + r * lda.
// The call computes rows [row0, row0 + m), so that a GEMM can be split over threads by rows.
template <typename T>
struct GemmArgs {
  int64_t m, n, k;
  const T* a;
  int64_t lda;
  const T* b;  // packed (tiles.h: pack_conv_weight): ceil(n / nr) panels, each [k][nr], zero beyond n
  T* c;        // whole panels are written, so ldc >= round_up(n, nr)
  int64_t ldc;
  bool accumulate = false;
  const T* bias = nullptr;  // round_up(n, nr) entries
  Activation act = Activation::None;
  int64_t group = 0, a_group_step = 0, c_group_step = 0;
  int64_t row0 = 0;
  T* workspace = nullptr;  // MicroKernels::gemm_workspace elements, 64-byte aligned, for packing A
};

// Depthwise sum over taps: out[r, q, ch] = act(sum_t in[origin(r, q) + taps[t] + ch] * weight[t, ch] + bias[ch]),
// with origin(r, q) = r * in_row_step + q * in_col_step (element offsets). The input is a zero-padded tile
// (tiles.h: Plane), so no tap needs a bounds check; strides and dilations are folded into the steps and taps.
template <typename T>
struct DepthwiseArgs {
  int64_t rows, cols, channels;  // output pixels rows x cols, each of `channels`
  const T* in;
  int64_t in_row_step, in_col_step;
  const int64_t* taps;  // [ntaps] element offsets from the window origin
  int64_t ntaps;
  const T* weight;  // [ntaps][channels]
  const T* bias;    // [channels]
  Activation act;
  T* out;  // pixel (r, q) at out + (r * cols + q) * out_ld
  int64_t out_ld;
};

template <typename T>
struct MicroKernels {
  const char* isa;  // "avx2" or "generic"
  int64_t nr;       // B panel width (output channels per register tile) that pack_conv must use
  int64_t gemm_workspace;  // elements of GemmArgs::workspace
  void (*gemm)(const GemmArgs<T>&);
  void (*depthwise)(const DepthwiseArgs<T>&);
};

// The kernels of the best instruction set this CPU supports, chosen on first use. The environment variable
// FASTCONV_CPU_ISA=generic forces the portable ones (to test them on an AVX2 machine).
template <typename T>
const MicroKernels<T>& microkernels();

// One table per instruction set, defined in microkernels_<isa>.cpp.
namespace generic {
MicroKernels<float> microkernels_f32();
MicroKernels<double> microkernels_f64();
}  // namespace generic

#if defined(FASTCONV_CPU_AVX2)
namespace avx2 {
MicroKernels<float> microkernels_f32();
MicroKernels<double> microkernels_f64();
}  // namespace avx2
#endif

}  // namespace fastconv::cpu

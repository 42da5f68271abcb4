// Index, padding and output-size math of the convolutions, shared by the CPU and CUDA kernels.
// Everything is int64_t: a tensor may hold more than 2^31 elements.
#pragma once

#include <cstdint>

#include "macros.h"

namespace fastconv {

FASTCONV_HOST_DEVICE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

FASTCONV_HOST_DEVICE int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Output extent of a convolution along one axis; 0 when the (dilated) kernel does not fit at all.
FASTCONV_HOST_DEVICE int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                                              int64_t dilation) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

// The padding that keeps the size of a stride-1 convolution with an odd kernel ("same").
FASTCONV_HOST_DEVICE int64_t same_padding(int64_t kernel) { return kernel / 2; }

// Input coordinate read by output coordinate `out` through kernel tap `tap`; may lie in the padding
// (< 0 or >= the input extent).
FASTCONV_HOST_DEVICE int64_t conv_input_index(int64_t out, int64_t tap, int64_t stride, int64_t pad,
                                              int64_t dilation) {
  return out * stride - pad + tap * dilation;
}

// Offset of element (n, h, w, c) in a channels_last (NHWC in memory) tensor of logical shape [N, C, H, W].
FASTCONV_HOST_DEVICE int64_t nhwc_offset(int64_t n, int64_t h, int64_t w, int64_t c, int64_t H, int64_t W,
                                         int64_t C) {
  return ((n * H + h) * W + w) * C + c;
}

}  // namespace fastconv

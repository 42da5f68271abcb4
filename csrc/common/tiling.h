// Tile geometry of the tiled kernels: how much input an output tile reads, and where it starts. Shared by the
// CUDA kernels and testable on the CPU.
#pragma once

#include <cstdint>

#include "conv_geometry.h"
#include "macros.h"

namespace fastconv {

// Input extent an output tile of `out_tile` positions reads along one axis, halo included.
FASTCONV_HOST_DEVICE int64_t tile_input_extent(int64_t out_tile, int64_t kernel, int64_t stride, int64_t dilation) {
  return (out_tile - 1) * stride + dilation * (kernel - 1) + 1;
}

// First input coordinate (possibly in the padding, < 0) read by the output tile that starts at `out_start`.
FASTCONV_HOST_DEVICE int64_t tile_input_start(int64_t out_start, int64_t stride, int64_t pad) {
  return conv_input_index(out_start, 0, stride, pad, 1);
}

}  // namespace fastconv

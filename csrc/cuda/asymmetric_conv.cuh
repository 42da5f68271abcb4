// The tap loop of the asymmetric conv kernels (asymmetric_conv_pair.cu, asymmetric_conv_parallel.cu): a block's
// implicit GEMM over a staged shared-memory tile, accumulated in registers across K chunks.
//
//   acc[p, 32 g + j] += sum_{r, s, k} src[p + (r + row_off_g) * row_stride + s + col_off_g][k] * w_s[g][r, s][j][k]
//
// for GEMM rows p < rows (virtual pixels, common/asymmetric_conv_tile.h), the 2 column groups g of 32 output
// channels and the K chunk k. Layouts of src (x_s or mid_s), w_s and c_s are those of asymmetric_conv_tile.h,
// so that the CPU emulator (csrc/cpu/asymmetric_conv_cuda_tiles.cpp) can stand in for this step.
//   fp16/bf16  tensor cores: 8 warps, warp w owns group w / 4 and the 16-row fragments w % 4 + 4 i (i < 4),
//              2 fragments of 16 columns each: 8 WMMA 16x16x16 accumulators (fp32) per warp;
//   fp32/fp64  CUDA cores: thread t owns rows t / 16 + 16 i (i < 8) and columns t % 16 + 16 j (j < 4).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <mma.h>

#include "../common/asymmetric_conv_tile.h"
#include "cuda_common.cuh"

namespace fastconv::cuda {

template <typename T, bool TENSOR_CORES = asym::TileTraits<T>::kTensorCores>
class TileGemm;

template <typename T>
class TileGemm<T, true> {
  using TT = asym::TileTraits<T>;
  using W = typename WmmaType<T>::type;
  static constexpr int kFragRows = 4;  // fragments of 16 rows per warp
  static constexpr int kFragCols = asym::kGroupN / 16;
  static constexpr int kRowWarps = TT::kThreads / 32 / asym::kGroups;
  static_assert(kRowWarps * kFragRows * 16 == TT::kMaxRows, "the warps' fragments cover kMaxRows");

 public:
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < kFragRows; ++i) {
#pragma unroll
      for (int j = 0; j < kFragCols; ++j) {
        nvcuda::wmma::fill_fragment(acc_[i][j], 0.0f);
      }
    }
  }

  // src: the staged array at the chunk's first column, rows `ld` elements apart (a multiple of 16, 32-byte
  // aligned); w_s: group 0's weights, group 1's `group_stride` elements further.
  __device__ __forceinline__ void mma(const T* src, int ld, int row_stride, const T* w_s, int group_stride,
                                      asym::TapConv conv0, asym::TapConv conv1, int rows) {
    namespace wmma = nvcuda::wmma;
    const int warp = threadIdx.x / 32;
    const int group = warp / kRowWarps, row_warp = warp % kRowWarps;
    const asym::TapConv conv = group == 0 ? conv0 : conv1;
    const W* a_base = reinterpret_cast<const W*>(src);
    const W* w_group = reinterpret_cast<const W*>(w_s + group * group_stride);
    const int frags = rows / 16;
    for (int r = 0; r < conv.kh; ++r) {
      for (int s = 0; s < conv.kw; ++s) {
        const int shift = (r + conv.row_off) * row_stride + s + conv.col_off;
        const W* w_tap = w_group + (r * conv.kw + s) * asym::kGroupN * TT::kLdK;
#pragma unroll
        for (int kk = 0; kk < TT::kChunkK; kk += 16) {
          // w_s holds rows of output channels: B = w^T, column-major.
          wmma::fragment<wmma::matrix_b, 16, 16, 16, W, wmma::col_major> b[kFragCols];
#pragma unroll
          for (int j = 0; j < kFragCols; ++j) {
            wmma::load_matrix_sync(b[j], w_tap + j * 16 * TT::kLdK + kk, TT::kLdK);
          }
#pragma unroll
          for (int i = 0; i < kFragRows; ++i) {
            const int m = row_warp + kRowWarps * i;
            if (m < frags) {
              wmma::fragment<wmma::matrix_a, 16, 16, 16, W, wmma::row_major> a;
              wmma::load_matrix_sync(a, a_base + static_cast<int64_t>(m * 16 + shift) * ld + kk, ld);
#pragma unroll
              for (int j = 0; j < kFragCols; ++j) {
                wmma::mma_sync(acc_[i][j], a, b[j], acc_[i][j]);
              }
            }
          }
        }
      }
    }
  }

  // c_s [rows][kLdC] (fp32): the accumulators of GEMM rows [0, rows).
  __device__ __forceinline__ void store(float* c_s, int rows) const {
    const int warp = threadIdx.x / 32;
    const int group = warp / kRowWarps, row_warp = warp % kRowWarps;
#pragma unroll
    for (int i = 0; i < kFragRows; ++i) {
      const int m = row_warp + kRowWarps * i;
      if (m < rows / 16) {
#pragma unroll
        for (int j = 0; j < kFragCols; ++j) {
          nvcuda::wmma::store_matrix_sync(c_s + m * 16 * asym::kLdC + group * asym::kGroupN + j * 16, acc_[i][j],
                                          asym::kLdC, nvcuda::wmma::mem_row_major);
        }
      }
    }
  }

 private:
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc_[kFragRows][kFragCols];
};

template <typename T>
class TileGemm<T, false> {
  using TT = asym::TileTraits<T>;
  using Acc = typename TT::Acc;
  static constexpr int kColThreads = 16;
  static constexpr int kRowThreads = TT::kThreads / kColThreads;
  static constexpr int kRows = TT::kMaxRows / kRowThreads;       // rows per thread
  static constexpr int kCols = asym::kTileN / kColThreads;       // columns per thread, kCols / kGroups per group
  static constexpr int kGroupCols = kCols / asym::kGroups;

 public:
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        acc_[i][j] = Acc(0);
      }
    }
  }

  // Same arguments as the tensor-core mma; every thread runs both groups.
  __device__ __forceinline__ void mma(const T* src, int ld, int row_stride, const T* w_s, int group_stride,
                                      asym::TapConv conv0, asym::TapConv conv1, int rows) {
    const int tc = threadIdx.x % kColThreads, tr = threadIdx.x / kColThreads;
#pragma unroll
    for (int g = 0; g < asym::kGroups; ++g) {
      const asym::TapConv conv = g == 0 ? conv0 : conv1;
      const T* w_group = w_s + g * group_stride + tc * TT::kLdK;
      for (int r = 0; r < conv.kh; ++r) {
        for (int s = 0; s < conv.kw; ++s) {
          const int shift = (r + conv.row_off) * row_stride + s + conv.col_off;
          const T* w_tap = w_group + (r * conv.kw + s) * asym::kGroupN * TT::kLdK;
          const T* a_tap = src + static_cast<int64_t>(tr + shift) * ld;
#pragma unroll 4
          for (int k = 0; k < TT::kChunkK; ++k) {
            Acc b[kGroupCols];
#pragma unroll
            for (int j = 0; j < kGroupCols; ++j) {
              b[j] = static_cast<Acc>(w_tap[j * kColThreads * TT::kLdK + k]);
            }
#pragma unroll
            for (int i = 0; i < kRows; ++i) {
              if (tr + kRowThreads * i < rows) {
                const Acc a = static_cast<Acc>(a_tap[static_cast<int64_t>(kRowThreads * i) * ld + k]);
#pragma unroll
                for (int j = 0; j < kGroupCols; ++j) {
                  acc_[i][g * kGroupCols + j] += a * b[j];
                }
              }
            }
          }
        }
      }
    }
  }

  // c_s [rows][kLdC]: column g * 32 + tc + 16 j' of group g is acc_[i][g * kGroupCols + j'].
  __device__ __forceinline__ void store(Acc* c_s, int rows) const {
    const int tc = threadIdx.x % kColThreads, tr = threadIdx.x / kColThreads;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int p = tr + kRowThreads * i;
      if (p < rows) {
#pragma unroll
        for (int j = 0; j < kCols; ++j) {
          c_s[p * asym::kLdC + (j / kGroupCols) * asym::kGroupN + (j % kGroupCols) * kColThreads + tc] = acc_[i][j];
        }
      }
    }
  }

 private:
  Acc acc_[kRows][kCols];
};

// Raises a kernel's dynamic shared-memory limit where it needs more than the default 48 KB.
template <typename Kernel>
void allow_smem(Kernel kernel, int bytes) {
  if (bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  }
}

// Blocks along channels (grid.y) and images (grid.z): at most 65535 each.
inline void check_grid(const char* op, int64_t slices, int64_t batch) {
  TORCH_CHECK(slices <= 65535 && batch <= 65535, "fastconv_C::", op, ": output too large for one launch: ", slices,
              " channel slices x ", batch, " images (at most 65535 x 65535)");
}

}  // namespace fastconv::cuda

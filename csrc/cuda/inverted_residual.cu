// inverted_residual on CUDA tensors: MobileNetV2's whole block in one kernel,
//   y = project(act(depthwise_k(act(expand(x) + b_e)) + b_d)) + b_p (+ x)       NHWC, padding k // 2 on E
// whose t-times expanded intermediate never leaves the multiprocessor.
//
// A block (256 threads) owns th x tw output pixels of one image (8x8, 4x8 or 4x4; stride 2: 4x8 or 4x4, the
// largest whose grid still covers every multiprocessor) and a slice of output channels, and loops over chunks of
// hc hidden channels (64, 32 or 16, the widest that fits):
//   1. once: X = the input tile with its halo ((th-1)s+k x (tw-1)s+k pixels, padded to 16 rows), zero outside
//      the image, in shared memory;
//   2. E = X We^T on tensor cores (WMMA 16x16x16, fp32) into shared fp32, then act(E + b_e) and E = 0 outside
//      the image (the zero padding is the expanded tensor's); with t = 1, E is the input tile's channels;
//   3. D = act(depthwise(E) + b_d) on CUDA cores, each thread one (pixel, channel) of the chunk, read from E;
//   4. acc += D Wp^T on tensor cores, acc [th*tw, cout slice] in registers;
// then the accumulator is staged through shared memory (over the dead loop arrays) so that the epilogue (b_p,
// residual) stores whole channel runs. Every step but the WMMA calls is a phase of
// common/inverted_residual_tile.h, which defines the shared arrays; csrc/cpu/inverted_residual_cuda_tiles.cpp
// runs the same phases on the CPU to test this indexing.
//
// Why this shape: the accumulator is th*tw x cout fp32, at most 6 fragments (48 registers) per thread over 8
// warps, i.e. 768 / (th*tw / 16) output channels per block: cout 320 fits a 4x4 or 4x8 tile whole and an 8x8
// tile in two slices. Where even 4x4 tiles leave multiprocessors idle (7x7 and 14x14 blocks at small batches),
// the output channels are split further, down to slices of 32; each slice recomputes the expansion, which the
// tensor cores have to spare there. Hidden channels (up to 960) never have to fit at once: one chunk of E lives
// at a time, p_in_pad x hc fp32 (8x8 tile: 112 x 64 x 4 B = 28 KB). The input tile stays for the whole loop
// (cin 160 at 4x4: 48 x 168 x 2 B = 16 KB), so each chunk reads only weights again, from L2. MobileNetV2's
// blocks take 31-125 KB of shared memory in fp16/bf16 and 45-202 KB in fp32 (batch 1 to 256; the
// 160 -> 960 -> 320 block with its whole cout: 102 KB in fp16). Masks are zero-filled operands: channels past
// cin, hidden and cout load as zeros, and act(0) = 0. fp16/bf16 load the operand tiles (X, We, Wp) 16 bytes at a
// time when the channel counts and pointers allow.
//   fp32/fp64 run the same tiling with the GEMMs on CUDA cores (4 x 2 outputs per thread, the accumulator in
// shared memory): no tensor cores at fp32 accuracy (TF32 would miss the 1e-4 rule), so a correctness path.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <ATen/DeviceGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <mma.h>
#include <torch/library.h>

#include "../common/inverted_residual_call.h"
#include "cuda_common.cuh"

namespace fastconv::cuda {
namespace {

constexpr const char* kOp = "inverted_residual";
constexpr int kWarps = kIrThreads / 32;

template <typename T>
constexpr bool kTensorCores = std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>;

namespace wmma = nvcuda::wmma;
using AccFrag = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// E[p_in_pad][cw] = X[p_in_pad][cin_pad] We[cw][cin_pad]^T, one 16x16 output fragment per warp at a time.
template <typename T>
__device__ __forceinline__ void expand_mma(const InvertedResidualTile& t, const IrSmem<T, float>& s, int cw) {
  using W = typename WmmaType<T>::type;
  const int warp = threadIdx.x / 32;
  const int tiles_n = cw / kIrMmaTile;
  const int frags = (t.p_in_pad / kIrMmaTile) * tiles_n;
  for (int f = warp; f < frags; f += kWarps) {
    const int m = f / tiles_n, nn = f % tiles_n;
    AccFrag acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kk = 0; kk < t.cin_pad; kk += kIrMmaTile) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, W, wmma::row_major> a;
      // We holds rows of the expand weight: B = We^T, column-major.
      wmma::fragment<wmma::matrix_b, 16, 16, 16, W, wmma::col_major> b;
      wmma::load_matrix_sync(a, reinterpret_cast<const W*>(s.x + m * kIrMmaTile * t.ldx + kk), t.ldx);
      wmma::load_matrix_sync(b, reinterpret_cast<const W*>(s.we + nn * kIrMmaTile * t.ldx + kk), t.ldx);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(s.e + m * kIrMmaTile * t.lde + nn * kIrMmaTile, acc, t.lde, wmma::mem_row_major);
  }
}

// Fragment i of this warp covers accumulator fragment warp + 8 i: rows (f % tiles_m), columns (f / tiles_m).
__device__ __forceinline__ int acc_fragment(int i) {
  return static_cast<int>(threadIdx.x / 32) + kWarps * i;
}

// acc[p_out][cout_blk] += D[p_out][cw] Wp[cout_blk][cw]^T.
template <typename T>
__device__ __forceinline__ void project_mma(const InvertedResidualTile& t, const IrSmem<T, float>& s, int cw,
                                            AccFrag (&acc)[kIrAccFragsPerWarp]) {
  using W = typename WmmaType<T>::type;
  const int tiles_m = t.p_out / kIrMmaTile;
  const int frags = tiles_m * (t.cout_blk / kIrMmaTile);
  for (int kk = 0; kk < cw; kk += kIrMmaTile) {
#pragma unroll
    for (int i = 0; i < kIrAccFragsPerWarp; ++i) {
      const int f = acc_fragment(i);
      if (f < frags) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, W, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, W, wmma::col_major> b;
        const int m = f % tiles_m, nn = f / tiles_m;
        wmma::load_matrix_sync(a, reinterpret_cast<const W*>(s.d + m * kIrMmaTile * t.ldd + kk), t.ldd);
        wmma::load_matrix_sync(b, reinterpret_cast<const W*>(s.wp + nn * kIrMmaTile * t.ldd + kk), t.ldd);
        wmma::mma_sync(acc[i], a, b, acc[i]);
      }
    }
  }
}

// One block per (output tile, output-channel slice, image): blockIdx (x, y, z). The phases and shared arrays are
// those of common/inverted_residual_tile.h, whose scalar GEMMs stand in for WMMA when T has no tensor cores.
template <typename T>
__global__ void __launch_bounds__(kIrThreads)
    inverted_residual_kernel(IrTensors<T> g, InvertedResidualTile t) {
  using Acc = acc_t<T>;
  extern __shared__ __align__(128) unsigned char smem[];
  const IrSmem<T, Acc> s = ir_smem<T, Acc>(smem, t);
  const int tid = threadIdx.x;
  const IrOrigin o = ir_tile_origin(t, blockIdx.x, blockIdx.y, blockIdx.z);
  if (t.expand) {
    ir_load_input<T>(tid, kIrThreads, t, o, g.x, s.x);
  }
  [[maybe_unused]] AccFrag acc[kIrAccFragsPerWarp];
  if constexpr (kTensorCores<T>) {
#pragma unroll
    for (int i = 0; i < kIrAccFragsPerWarp; ++i) {
      wmma::fill_fragment(acc[i], 0.0f);
    }
  } else {
    ir_zero_acc(tid, kIrThreads, t, s.c);
  }
  for (int h0 = 0; h0 < t.hidden; h0 += t.hc) {
    const int cw = ir_chunk_width(t, h0);
    ir_load_chunk<T, Acc>(tid, kIrThreads, t, o, g, s, h0, cw);
    __syncthreads();
    if (t.expand) {
      if constexpr (kTensorCores<T>) {
        expand_mma<T>(t, s, cw);
      } else {
        ir_expand_scalar<T, Acc>(tid, kIrThreads, t, s, cw);
      }
      __syncthreads();
      ir_activate_expanded<T, Acc>(tid, kIrThreads, t, o, s, cw);
      __syncthreads();
    }
    ir_depthwise<T, Acc>(tid, kIrThreads, t, s, cw);
    __syncthreads();
    if constexpr (kTensorCores<T>) {
      project_mma<T>(t, s, cw, acc);
    } else {
      ir_project_scalar<T, Acc>(tid, kIrThreads, t, s, cw, s.c);
    }
    // The next chunk overwrites We, E, D and Wp.
    __syncthreads();
  }
  if constexpr (kTensorCores<T>) {
    const int tiles_m = t.p_out / kIrMmaTile;
    const int frags = tiles_m * (t.cout_blk / kIrMmaTile);
#pragma unroll
    for (int i = 0; i < kIrAccFragsPerWarp; ++i) {
      const int f = acc_fragment(i);
      if (f < frags) {
        const int m = f % tiles_m, nn = f / tiles_m;
        wmma::store_matrix_sync(s.c + m * kIrMmaTile * t.ldc + nn * kIrMmaTile, acc[i], t.ldc,
                                wmma::mem_row_major);
      }
    }
    __syncthreads();
  }
  ir_epilogue<T, Acc>(tid, kIrThreads, t, o, g, s.c);
}

template <typename T>
void launch(const IrTensors<T>& g, const InvertedResidualTile& problem) {
  using Acc = acc_t<T>;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  InvertedResidualTile t = choose_ir_tile(problem, sizeof(T), sizeof(Acc), kTensorCores<T>, static_cast<int64_t>(sms));
  t.vec16 = ir_vec16(t, sizeof(T), g.x, g.we, g.wp);
  TORCH_CHECK(t.smem_bytes > 0, "fastconv_C::", kOp, ": a tile of ", problem.cin, " input channels does not fit ",
              "the shared memory of one block (", kIrMaxSmemBytes, " bytes) in ", c10::CppTypeToScalarType<T>::value,
              "; use the 'cpu' or 'reference' backend for this shape");
  const int64_t tiles = ir_tiles(t);
  TORCH_CHECK(tiles <= INT32_MAX && t.cout_slices <= 65535 && t.n <= 65535, "fastconv_C::", kOp,
              ": output too large for one launch: ", tiles, " tiles x ", t.cout_slices, " channel slices x ", t.n,
              " images (at most 2^31-1 x 65535 x 65535)");
  auto kernel = inverted_residual_kernel<T>;
  if (t.smem_bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(t.smem_bytes)));
  }
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(t.cout_slices), static_cast<unsigned>(t.n));
  kernel<<<grid, kIrThreads, t.smem_bytes, at::cuda::getCurrentCUDAStream()>>>(g, t);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor inverted_residual_cuda(const at::Tensor& x_in, const std::optional<at::Tensor>& expand_weight,
                                  const std::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                                  const std::optional<at::Tensor>& dw_bias, const at::Tensor& project_weight,
                                  const std::optional<at::Tensor>& project_bias, int64_t stride, bool residual,
                                  c10::string_view activation) {
  const c10::OptionalDeviceGuard guard(at::device_of(x_in));
  return call_inverted_residual(kOp, c10::DeviceType::CUDA, x_in, expand_weight, expand_bias, dw_weight, dw_bias,
                                project_weight, project_bias, stride, residual,
                                std::string_view(activation.data(), activation.size()),
                                [](const auto& g, const InvertedResidualTile& problem) { launch(g, problem); });
}

}  // namespace
}  // namespace fastconv::cuda

TORCH_LIBRARY_IMPL(fastconv_C, CUDA, m) { m.impl(fastconv::cuda::kOp, &fastconv::cuda::inverted_residual_cuda); }

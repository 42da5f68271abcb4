// 1x1 convolution on CUDA tensors as a GEMM over NHWC pixels:
//   y[m, n] = act(sum_k x[m, k] * w[n, k] + b[n] + r[m, n])    m: pixel (N*H*W), k: input channel, n: output channel
// x [M, K] and the residual/output [M, Cout] are the channels_last tensors as matrices; w [Cout, K] is the
// PyTorch weight, read as the column-major K x Cout matrix B. A block computes a 64x64 tile of y:
//   fp16/bf16  tensor cores (WMMA 16x16x16, fp32 accumulators): 4 warps of 32x32, K in steps of 32 staged in
//              shared memory (16-byte loads when K allows), the fp32 tile staged again for the epilogue so that
//              the stores run along channels;
//   fp32/fp64  CUDA cores: 256 threads of 4x4 outputs, K in steps of 16 staged in shared memory.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <torch/library.h>

#include "../common/activation.h"
#include "../common/conv_geometry.h"
#include "../common/op_args.h"
#include "cuda_common.cuh"

namespace fastconv::cuda {
namespace {

constexpr const char* kOp = "pointwise_conv2d";
constexpr int kTileM = 64;
constexpr int kTileN = 64;

struct GemmParams {
  int64_t m, n, k;  // y [m, n] = x [m, k] * w [n, k]^T
  Activation act;
};

// y[m, n] from its fp32/fp64 accumulator: bias [n] and residual [m, n] (either may be null), then the activation.
template <typename T, typename Acc>
__device__ __forceinline__ void store_output(T* y, const T* bias, const T* residual, const GemmParams& p, int64_t m,
                                             int64_t n, Acc acc) {
  const int64_t at = m * p.n + n;
  const Acc b = bias != nullptr ? static_cast<Acc>(bias[n]) : Acc(0);
  const Acc r = residual != nullptr ? static_cast<Acc>(residual[at]) : Acc(0);
  y[at] = static_cast<T>(activate(acc + b + r, p.act));
}

// ---------------------------------------------------------------------------------------------------------
// CUDA cores (fp32, fp64).

constexpr int kSimtThreads = 256;
constexpr int kSimtK = 16;

// x [m, k], w [n, k], bias [n] or null, residual [m, n] or null, y [m, n]; all row-major.
template <typename T>
__global__ void __launch_bounds__(kSimtThreads)
    pointwise_simt_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                          const T* __restrict__ residual, T* __restrict__ y, GemmParams p) {
  using Acc = acc_t<T>;
  // Transposed (k-major) so that the inner loop reads a row of M or N values; +1 keeps the stores conflict-free.
  __shared__ Acc a_s[kSimtK][kTileM + 1];
  __shared__ Acc b_s[kSimtK][kTileN + 1];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTileM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTileN;
  Acc acc[4][4] = {};
  for (int64_t k0 = 0; k0 < p.k; k0 += kSimtK) {
#pragma unroll
    for (int i = 0; i < kTileM * kSimtK / kSimtThreads; ++i) {
      const int idx = tid + i * kSimtThreads;
      const int r = idx / kSimtK, kk = idx % kSimtK;
      const int64_t k = k0 + kk;
      a_s[kk][r] = m0 + r < p.m && k < p.k ? static_cast<Acc>(x[(m0 + r) * p.k + k]) : Acc(0);
      b_s[kk][r] = n0 + r < p.n && k < p.k ? static_cast<Acc>(w[(n0 + r) * p.k + k]) : Acc(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimtK; ++kk) {
      Acc a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = a_s[kk][ty + 16 * i];
        b[i] = b_s[kk][tx + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc[i][j] += a[i] * b[j];
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < p.m && n < p.n) {
        store_output(y, bias, residual, p, m, n, acc[i][j]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Tensor cores (fp16, bf16).

constexpr int kWmmaThreads = 128;
constexpr int kWmmaK = 32;
// Row padding of the staged tiles: keeps rows 16-byte aligned (WMMA needs ldm % 8 == 0 for 16-bit types) and
// shifts successive rows across banks.
constexpr int kPadK = kWmmaK + 8;
constexpr int kPadN = kTileN + 4;

// Copies rows [row0, row0 + rows) x columns [k0, k0 + kWmmaK) of the row-major [limit, ld] matrix src into
// dst [rows][kPadK], zero-filling past its edges; VEC elements (16 bytes when VEC = 8) per access.
template <typename T, int VEC, int ROWS>
__device__ __forceinline__ void stage_tile(T* dst, const T* __restrict__ src, int64_t row0, int64_t limit,
                                           int64_t ld, int k0) {
  using V = Vec<T, VEC>;
  constexpr int kPerRow = kWmmaK / VEC;
  for (int idx = threadIdx.x; idx < ROWS * kPerRow; idx += kWmmaThreads) {
    const int r = idx / kPerRow, kk = (idx % kPerRow) * VEC;
    const int64_t row = row0 + r;
    const int k = k0 + kk;
    V v{};
    if (row < limit && k < ld) {
      v = *reinterpret_cast<const V*>(src + row * ld + k);
    }
    *reinterpret_cast<V*>(dst + r * kPadK + kk) = v;
  }
}

// Same arguments as pointwise_simt_kernel; K a multiple of VEC.
template <typename T, int VEC>
__global__ void __launch_bounds__(kWmmaThreads)
    pointwise_wmma_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                          const T* __restrict__ residual, T* __restrict__ y, GemmParams p) {
  namespace wmma = nvcuda::wmma;
  using W = typename WmmaType<T>::type;
  // WMMA loads and stores need 256-bit aligned tile pointers.
  __shared__ __align__(32) T a_s[kTileM * kPadK];
  __shared__ __align__(32) T b_s[kTileN * kPadK];
  __shared__ __align__(32) float c_s[kTileM * kPadN];
  const int warp = threadIdx.x / 32;
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;  // the warp's 32x32 quarter of the tile
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTileM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTileN;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::fill_fragment(acc[i][j], 0.0f);
    }
  }
  // Row offsets are 64-bit, the K position is not: it stays below the channel count.
  for (int k0 = 0; k0 < p.k; k0 += kWmmaK) {
    stage_tile<T, VEC, kTileM>(a_s, x, m0, p.m, p.k, k0);
    stage_tile<T, VEC, kTileN>(b_s, w, n0, p.n, p.k, k0);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kWmmaK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, W, wmma::row_major> a[2];
      // b_s holds rows of w, i.e. B = w^T stored column-major.
      wmma::fragment<wmma::matrix_b, 16, 16, 16, W, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(a[i], reinterpret_cast<const W*>(a_s + (wm + 16 * i) * kPadK + kk), kPadK);
        wmma::load_matrix_sync(b[i], reinterpret_cast<const W*>(b_s + (wn + 16 * i) * kPadK + kk), kPadK);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(c_s + (wm + 16 * i) * kPadN + wn + 16 * j, acc[i][j], kPadN, wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kTileM * kTileN; idx += kWmmaThreads) {
    const int r = idx / kTileN, c = idx % kTileN;
    const int64_t m = m0 + r, n = n0 + c;
    if (m < p.m && n < p.n) {
      store_output(y, bias, residual, p, m, n, c_s[r * kPadN + c]);
    }
  }
}

template <typename T>
void launch(const at::Tensor& x, const at::Tensor& weight, const T* bias, const T* residual, at::Tensor& y,
            const GemmParams& p) {
  const int64_t tiles_m = ceil_div(p.m, kTileM), tiles_n = ceil_div(p.n, kTileN);
  TORCH_CHECK(tiles_m <= INT32_MAX && tiles_n <= 65535, "fastconv_C::", kOp, ": output too large for one launch: ",
              p.m, " pixels x ", p.n, " channels");
  TORCH_CHECK_VALUE(p.k <= INT32_MAX - kWmmaK, "fastconv_C::", kOp, ": x must have fewer than 2^31 - ", kWmmaK,
                    " channels; got ", p.k);
  const dim3 grid(static_cast<unsigned>(tiles_m), static_cast<unsigned>(tiles_n));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const T* xp = x.const_data_ptr<T>();
  const T* wp = weight.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  if constexpr (std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>) {
    constexpr int kVec = kVec16<T>;
    if (vector_aligned({xp, wp}, p.k, kVec, 16)) {
      pointwise_wmma_kernel<T, kVec><<<grid, kWmmaThreads, 0, stream>>>(xp, wp, bias, residual, yp, p);
    } else {
      pointwise_wmma_kernel<T, 1><<<grid, kWmmaThreads, 0, stream>>>(xp, wp, bias, residual, yp, p);
    }
  } else {
    pointwise_simt_kernel<T><<<grid, kSimtThreads, 0, stream>>>(xp, wp, bias, residual, yp, p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor pointwise_conv2d_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                                 const std::optional<at::Tensor>& bias_in, c10::string_view activation,
                                 const std::optional<at::Tensor>& residual_in) {
  const PointwiseGeometry g = check_pointwise_args(kOp, c10::DeviceType::CUDA, x_in, weight_in, bias_in,
                                                   std::string_view(activation.data(), activation.size()),
                                                   residual_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {g.n, g.cout, g.h, g.w});
  if (y.numel() == 0) {
    return y;
  }
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor bias = contiguous_or_undefined(bias_in);
  const at::Tensor residual = contiguous_or_undefined(residual_in, at::MemoryFormat::ChannelsLast);
  const GemmParams p{g.n * g.h * g.w, g.cout, g.cin, g.act};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_C::pointwise_conv2d", [&] {
    launch<scalar_t>(x, weight, data_or_null<scalar_t>(bias), data_or_null<scalar_t>(residual), y, p);
  });
  return y;
}

}  // namespace
}  // namespace fastconv::cuda

TORCH_LIBRARY_IMPL(fastconv_C, CUDA, m) { m.impl(fastconv::cuda::kOp, &fastconv::cuda::pointwise_conv2d_cuda); }

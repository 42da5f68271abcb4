// asymmetric_conv_parallel on CUDA tensors: InceptionE's 1xn || nx1 over one input, written into one output:
//
//   y[..., :ca] = act(conv_a(x) + b_a),  y[..., ca:] = act(conv_b(x) + b_b)    "same" padding, stride 1
//
// A block owns an output tile of one image and channel slice s: channels [32 s, 32 s + 32) of conv_a and of
// conv_b. One input tile, with the larger halo of the two kernels along each axis ((tile_h + 2) x (tile_w + 2)
// for 1x3 || 3x1), is staged per K chunk of input channels in shared memory (x_s) beside both convs' weight
// chunks (w_s): half the warps (tensor cores) or half of each thread's columns (CUDA cores) run conv_a's taps
// over it, the other half conv_b's, each with its window offset inside the shared tile (asymmetric_conv.cuh).
// The accumulators go through c_s (aliasing x_s/w_s) to the bias + activation epilogue, which writes conv_a's
// channels at their place in y and conv_b's after cout_a: no concatenation pass.
// Why it fits: cin (384 in InceptionE, any count in general) streams through x_s in chunks of 32 channels
// (16 on CUDA cores), so it costs time, not space; at 8x8 the whole image is one tile (8 x 10
// GEMM rows), about 10 KB of x_s and 18 KB of weights per chunk in fp16. Channel counts that are not
// multiples of 32 are masked at staging (zeros) and in the epilogue.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/asymmetric_conv_tile.h"
#include "../common/op_args.h"
#include "asymmetric_conv.cuh"
#include "cuda_common.cuh"

namespace fastconv::cuda {
namespace {

constexpr const char* kOp = "asymmetric_conv_parallel";

// x [N, H, W, cin] and y [N, H, W, cout_a + cout_b] in memory (channels_last); weight_a [cout_a, cin, kh, kw],
// weight_b [cout_b, cin, kh, kw]; biases or null. vec: x 16-byte aligned, cin a multiple of 8.
template <typename T>
__global__ void __launch_bounds__(asym::TileTraits<T>::kThreads, 1)
    asymmetric_conv_parallel_kernel(const T* __restrict__ x, const T* __restrict__ weight_a,
                                    const T* __restrict__ bias_a, const T* __restrict__ weight_b,
                                    const T* __restrict__ bias_b, T* __restrict__ y, asym::ParallelPlan p, bool vec) {
  using TT = asym::TileTraits<T>;
  using Acc = typename TT::Acc;
  extern __shared__ __align__(128) unsigned char smem[];
  T* x_s = reinterpret_cast<T*>(smem);
  T* w_s = reinterpret_cast<T*>(smem + p.w_offset);
  Acc* c_s = reinterpret_cast<Acc*>(smem);
  const int tid = threadIdx.x, threads = TT::kThreads;
  const int64_t n = blockIdx.z;
  const asym::TileOrigin o = asym::tile_origin(blockIdx.x, p.tiles_w, p.tile_h, p.tile_w);
  const int group_stride = asym::weight_group_offset<T>(1, p.taps_max);
  const int first = blockIdx.y * asym::kGroupN;
  TileGemm<T> gemm;

  gemm.zero();
  for (int k0 = 0; k0 < p.cin; k0 += TT::kChunkK) {
    asym::load_input_chunk(x_s, x, n, o, p.in, p.h, p.w, p.cin, k0, vec, tid, threads);
    asym::load_weight_chunk(w_s, weight_a, p.cout_a, p.cin, p.conv_a.kh * p.conv_a.kw, first, k0, tid, threads);
    asym::load_weight_chunk(w_s + group_stride, weight_b, p.cout_b, p.cin, p.conv_b.kh * p.conv_b.kw, first, k0,
                            tid, threads);
    __syncthreads();
    gemm.mma(x_s, TT::kLdK, p.in.in_w, w_s, group_stride, p.conv_a, p.conv_b, p.rows);
    __syncthreads();
  }
  gemm.store(c_s, p.rows);
  __syncthreads();
  const asym::OutputGroups<T> groups{{{bias_a, first, p.cout_a, 0}, {bias_b, first, p.cout_b, p.cout_a}}};
  asym::store_output(y, c_s, groups, p.in.in_w, p.tile_h, p.tile_w, n, o, p.h, p.w, p.cout_a + p.cout_b, p.act, tid,
                     threads);
}

at::Tensor asymmetric_conv_parallel_cuda(const at::Tensor& x_in, const at::Tensor& weight_a_in,
                                         const std::optional<at::Tensor>& bias_a_in, const at::Tensor& weight_b_in,
                                         const std::optional<at::Tensor>& bias_b_in, c10::string_view activation) {
  const AsymmetricParallelGeometry g =
      check_asymmetric_parallel_args(kOp, c10::DeviceType::CUDA, x_in, weight_a_in, bias_a_in, weight_b_in,
                                     bias_b_in, std::string_view(activation.data(), activation.size()));
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {g.n, g.a.cout + g.b.cout, g.h, g.w});
  if (y.numel() == 0) {
    return y;
  }
  const at::Tensor weight_a = weight_a_in.contiguous(), weight_b = weight_b_in.contiguous();
  const at::Tensor bias_a = contiguous_or_undefined(bias_a_in), bias_b = contiguous_or_undefined(bias_b_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_C::asymmetric_conv_parallel", [&] {
        using TT = asym::TileTraits<scalar_t>;
        const asym::ParallelPlan p = asym::plan_parallel<scalar_t>(kOp, g);
        check_grid(kOp, p.slices, g.n);
        const dim3 grid(static_cast<unsigned>(p.tiles), static_cast<unsigned>(p.slices), static_cast<unsigned>(g.n));
        const bool vec = vector_aligned({x.const_data_ptr()}, g.cin, TT::kVec, 16);
        auto kernel = asymmetric_conv_parallel_kernel<scalar_t>;
        allow_smem(kernel, p.smem_bytes);
        kernel<<<grid, TT::kThreads, p.smem_bytes, at::cuda::getCurrentCUDAStream()>>>(
            x.const_data_ptr<scalar_t>(), weight_a.const_data_ptr<scalar_t>(),
            data_or_null<scalar_t>(bias_a), weight_b.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(bias_b), y.mutable_data_ptr<scalar_t>(), p, vec);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return y;
}

}  // namespace
}  // namespace fastconv::cuda

TORCH_LIBRARY_IMPL(fastconv_C, CUDA, m) {
  m.impl(fastconv::cuda::kOp, &fastconv::cuda::asymmetric_conv_parallel_cuda);
}

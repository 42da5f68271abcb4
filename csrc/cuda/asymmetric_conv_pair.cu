// asymmetric_conv_pair on CUDA tensors: InceptionV3's 1xn -> act -> nx1 -> act (or nx1 -> 1xn), fused so that
// the intermediate never goes to device memory:
//
//   mid = act(conv1(x) + b1)      conv1: weight1 [cmid, cin, kh1, kw1], "same" padding
//   y   = act(conv2(mid) + b2)    conv2: weight2 [cout, cmid, kh2, kw2], "same" padding (zeros around mid)
//
// A block owns an output tile (tile_h x tile_w pixels of one image) and a slice of output channels:
//   1. conv1 on the intermediate tile, the output tile plus the halo conv2 reads ((tile_h + kh2 - 1) x
//      (tile_w + kw2 - 1) pixels), for all cmid channels, 64 at a time: K chunks of input channels of the input
//      tile (intermediate tile plus conv1's halo) and of weight1 are staged in shared memory (x_s, w_s) and
//      multiplied tap by tap (asymmetric_conv.cuh). The activated result goes to mid_s in the storage dtype,
//      as PyTorch rounds its intermediate, with zeros outside the image: conv2's padding applies to the
//      intermediate, not to x.
//   2. conv2 from mid_s, which holds every intermediate channel: only chunks of weight2 are staged; the
//      accumulators go through c_s (aliasing x_s/w_s) to the bias + activation epilogue, stored along channels.
// Why it fits: the input channels (768 at InceptionC's input, 128..192 after its 1x1 convs, which feed the
// pairs) stream through x_s in chunks of 32 (16 on CUDA cores), so cin costs time, not space. The intermediate
// stays whole: all cmid channels x (tile + halo) pixels. For 1x7 -> 7x1 at 17x17, 192 -> 192 -> 192 in fp16,
// plan_pair (asymmetric_conv_tile.h) picks 9 x 9 output tiles: a 15 x 9 intermediate, 150 rows x 208 halves =
// 61 KB of mid_s, beside 65 KB of staging (c_s for 240 GEMM rows), 126 KB in all: the tile that needs the
// least MMA work within 227 KB and the accumulator budget (256 GEMM rows on tensor cores, 128 on CUDA cores).
// A cmid too large for even a 1-pixel tile is refused with a message. When the tiles fill less than half the
// SMs, the output channels are split over blocks, each recomputing conv1.
// Channel counts that are not multiples of the chunks are masked at staging (zeros) and in the epilogues.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
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

constexpr const char* kOp = "asymmetric_conv_pair";

// x [N, H, W, cin] and y [N, H, W, cout] in memory (channels_last); weight1 [cmid, cin, kh1, kw1],
// weight2 [cout, cmid, kh2, kw2]; biases [cmid], [cout] or null. vec: x 16-byte aligned, cin a multiple of 8.
template <typename T>
__global__ void __launch_bounds__(asym::TileTraits<T>::kThreads, 1)
    asymmetric_conv_pair_kernel(const T* __restrict__ x, const T* __restrict__ weight1, const T* __restrict__ bias1,
                                const T* __restrict__ weight2, const T* __restrict__ bias2, T* __restrict__ y,
                                asym::PairPlan p, bool vec) {
  using TT = asym::TileTraits<T>;
  using Acc = typename TT::Acc;
  extern __shared__ __align__(128) unsigned char smem[];
  T* x_s = reinterpret_cast<T*>(smem);
  T* w_s = reinterpret_cast<T*>(smem + p.w_offset);
  Acc* c_s = reinterpret_cast<Acc*>(smem);
  T* mid_s = reinterpret_cast<T*>(smem + p.mid_offset);
  const int tid = threadIdx.x, threads = TT::kThreads;
  const int64_t n = blockIdx.z;
  const asym::TileOrigin o = asym::tile_origin(blockIdx.x, p.tiles_w, p.tile_h, p.tile_w);
  const int group_stride = asym::weight_group_offset<T>(1, p.taps_max);
  const int taps1 = p.conv1.kh * p.conv1.kw, taps2 = p.conv2.kh * p.conv2.kw;
  TileGemm<T> gemm;

  asym::zero_rows(mid_s, p.mid_h * p.mid_w, p.mid_rows, p.mid_ld, tid, threads);
  for (int n0 = 0; n0 < p.cmid; n0 += asym::kTileN) {
    gemm.zero();
    for (int k0 = 0; k0 < p.cin; k0 += TT::kChunkK) {
      asym::load_input_chunk(x_s, x, n, o, p.in, p.h, p.w, p.cin, k0, vec, tid, threads);
      for (int g = 0; g < asym::kGroups; ++g) {
        asym::load_weight_chunk(w_s + g * group_stride, weight1, p.cmid, p.cin, taps1, n0 + g * asym::kGroupN, k0,
                                tid, threads);
      }
      __syncthreads();
      gemm.mma(x_s, TT::kLdK, p.in.in_w, w_s, group_stride, p.conv1, p.conv1, p.rows1);
      __syncthreads();
    }
    gemm.store(c_s, p.rows1);
    __syncthreads();
    asym::store_intermediate(mid_s, c_s, bias1, p, o, n0, tid, threads);
    __syncthreads();
  }

  const int first = blockIdx.y * p.slice_channels;
  const int last = min(p.cout, first + p.slice_channels);
  for (int n0 = first; n0 < last; n0 += asym::kTileN) {
    gemm.zero();
    for (int k0 = 0; k0 < p.kmid; k0 += TT::kChunkK) {
      for (int g = 0; g < asym::kGroups; ++g) {
        asym::load_weight_chunk(w_s + g * group_stride, weight2, p.cout, p.cmid, taps2, n0 + g * asym::kGroupN, k0,
                                tid, threads);
      }
      __syncthreads();
      gemm.mma(mid_s + k0, p.mid_ld, p.mid_w, w_s, group_stride, p.conv2, p.conv2, p.rows2);
      __syncthreads();
    }
    gemm.store(c_s, p.rows2);
    __syncthreads();
    const asym::OutputGroups<T> groups{{{bias2, n0, last, 0}, {bias2, n0 + asym::kGroupN, last, 0}}};
    asym::store_output(y, c_s, groups, p.mid_w, p.tile_h, p.tile_w, n, o, p.h, p.w, p.cout, p.act, tid, threads);
    __syncthreads();
  }
}

at::Tensor asymmetric_conv_pair_cuda(const at::Tensor& x_in, const at::Tensor& weight1_in,
                                     const std::optional<at::Tensor>& bias1_in, const at::Tensor& weight2_in,
                                     const std::optional<at::Tensor>& bias2_in, c10::string_view activation) {
  const AsymmetricPairGeometry g =
      check_asymmetric_pair_args(kOp, c10::DeviceType::CUDA, x_in, weight1_in, bias1_in, weight2_in, bias2_in,
                                 std::string_view(activation.data(), activation.size()));
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {g.n, g.second.cout, g.h, g.w});
  if (y.numel() == 0) {
    return y;
  }
  const at::Tensor weight1 = weight1_in.contiguous(), weight2 = weight2_in.contiguous();
  const at::Tensor bias1 = contiguous_or_undefined(bias1_in), bias2 = contiguous_or_undefined(bias2_in);
  // torch caches the device's properties: no driver query per call.
  const int sm_count = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_C::asymmetric_conv_pair", [&] {
    using TT = asym::TileTraits<scalar_t>;
    const asym::PairPlan p = asym::plan_pair<scalar_t>(kOp, g, sm_count);
    check_grid(kOp, p.slices, g.n);
    const dim3 grid(static_cast<unsigned>(p.tiles), static_cast<unsigned>(p.slices), static_cast<unsigned>(g.n));
    const bool vec = vector_aligned({x.const_data_ptr()}, g.cin, TT::kVec, 16);
    auto kernel = asymmetric_conv_pair_kernel<scalar_t>;
    allow_smem(kernel, p.smem_bytes);
    kernel<<<grid, TT::kThreads, p.smem_bytes, at::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), weight1.const_data_ptr<scalar_t>(),
        data_or_null<scalar_t>(bias1), weight2.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(bias2), y.mutable_data_ptr<scalar_t>(), p, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

}  // namespace
}  // namespace fastconv::cuda

TORCH_LIBRARY_IMPL(fastconv_C, CUDA, m) { m.impl(fastconv::cuda::kOp, &fastconv::cuda::asymmetric_conv_pair_cuda); }

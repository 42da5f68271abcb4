// Depthwise convolution on CUDA tensors, NHWC:
//   y[n, oh, ow, c] = act(sum_{r, s} x[n, oh*sh - ph + r*dh, ow*sw - pw + s*dw, c] * w[c, 0, r, s] + b[c])
// A block computes an 8x8 tile of output pixels for a run of channels. Its threads are (channel vectors) x
// (pixel rows): each thread owns VEC adjacent channels (one 16-byte access when the channels allow it) and
// walks the tile's pixels. The input tile, halo included, is staged in shared memory once, so that each input
// element is read from device memory once per block instead of kh*kw times; the weights of the block's
// channels are staged beside it in fp32. When the tile would not fit (very large kernels or dilations) the
// same loop reads device memory directly.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/activation.h"
#include "../common/conv_geometry.h"
#include "../common/op_args.h"
#include "../common/tiling.h"
#include "cuda_common.cuh"

namespace fastconv::cuda {
namespace {

constexpr const char* kOp = "depthwise_conv2d";
constexpr int kThreads = 256;
constexpr int kTileH = 8;
constexpr int kTileW = 8;
// Above this the tile is not staged: the direct loop reads device memory instead.
constexpr int64_t kMaxTileSmem = 160 * 1024;

// Threads along channels: 8 x 16-byte vectors (128 bytes of a pixel) or 32 scalars.
template <int VEC>
constexpr int channel_threads() {
  return VEC == 1 ? 32 : 8;
}

struct DepthwiseParams {
  int64_t n, channels, h, w, ho, wo;
  int kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int tiles_w;         // output tiles along W
  int in_th, in_tw;    // input tile extent, halo included
  Activation act;
};

// x [N, H, W, C] and y [N, ho, wo, C] in memory (channels_last); weight [C, kh*kw]; bias [C] or null.
template <typename T, int VEC, bool TILED>
__global__ void __launch_bounds__(kThreads)
    depthwise_conv2d_kernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                            T* __restrict__ y, DepthwiseParams p) {
  using Acc = acc_t<T>;
  using V = Vec<T, VEC>;
  constexpr int CV = channel_threads<VEC>();
  constexpr int PY = kThreads / CV;
  constexpr int CB = CV * VEC;  // channels per block
  extern __shared__ __align__(16) unsigned char smem[];

  const int tx = threadIdx.x % CV;
  const int ty = threadIdx.x / CV;
  const int64_t n = blockIdx.z;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * CB;
  const int64_t oh0 = static_cast<int64_t>(blockIdx.x / p.tiles_w) * kTileH;
  const int64_t ow0 = static_cast<int64_t>(blockIdx.x % p.tiles_w) * kTileW;
  const int64_t ih0 = tile_input_start(oh0, p.stride_h, p.pad_h);
  const int64_t iw0 = tile_input_start(ow0, p.stride_w, p.pad_w);
  const int taps = p.kh * p.kw;
  const int64_t c = c0 + tx * VEC;

  // The input vector at (ih, iw) for channels [c, c + VEC); zeros in the padding and past C.
  auto load = [&](int64_t ih, int64_t iw, int64_t ch) {
    const bool inside = ih >= 0 && ih < p.h && iw >= 0 && iw < p.w && ch < p.channels;
    return inside ? *reinterpret_cast<const V*>(x + nhwc_offset(n, ih, iw, ch, p.h, p.w, p.channels)) : V{};
  };

  Acc* w_s = reinterpret_cast<Acc*>(smem);  // [taps][CB]
  V* x_s = reinterpret_cast<V*>(smem + round_up(static_cast<int64_t>(taps) * CB * sizeof(Acc), 16));
  if constexpr (TILED) {
    for (int i = threadIdx.x; i < taps * CB; i += kThreads) {
      const int tap = i / CB, cc = i % CB;
      w_s[i] = c0 + cc < p.channels ? static_cast<Acc>(weight[(c0 + cc) * taps + tap]) : Acc(0);
    }
    for (int i = threadIdx.x; i < p.in_th * p.in_tw * CV; i += kThreads) {
      const int pix = i / CV, cv = i % CV;
      x_s[i] = load(ih0 + pix / p.in_tw, iw0 + pix % p.in_tw, c0 + cv * VEC);
    }
    __syncthreads();
  }
  if (c >= p.channels) {
    return;
  }
  Acc b[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    b[j] = bias != nullptr && c + j < p.channels ? static_cast<Acc>(bias[c + j]) : Acc(0);
  }
  for (int pix = ty; pix < kTileH * kTileW; pix += PY) {
    const int th = pix / kTileW, tw = pix % kTileW;
    const int64_t oh = oh0 + th, ow = ow0 + tw;
    if (oh >= p.ho || ow >= p.wo) {
      continue;
    }
    Acc acc[VEC] = {};
    for (int r = 0; r < p.kh; ++r) {
      for (int s = 0; s < p.kw; ++s) {
        const int tap = r * p.kw + s;
        const int lh = th * p.stride_h + r * p.dil_h, lw = tw * p.stride_w + s * p.dil_w;
        const V v = TILED ? x_s[(lh * p.in_tw + lw) * CV + tx] : load(ih0 + lh, iw0 + lw, c);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const Acc wv = TILED ? w_s[tap * CB + tx * VEC + j]
                               : (c + j < p.channels ? static_cast<Acc>(weight[(c + j) * taps + tap]) : Acc(0));
          acc[j] += static_cast<Acc>(v.v[j]) * wv;
        }
      }
    }
    V out;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      out.v[j] = static_cast<T>(activate(acc[j] + b[j], p.act));
    }
    if constexpr (VEC == 1) {
      y[nhwc_offset(n, oh, ow, c, p.ho, p.wo, p.channels)] = out.v[0];
    } else {
      *reinterpret_cast<V*>(y + nhwc_offset(n, oh, ow, c, p.ho, p.wo, p.channels)) = out;
    }
  }
}

template <typename T, int VEC>
void launch(const at::Tensor& x, const at::Tensor& weight, const T* bias, at::Tensor& y, DepthwiseParams p) {
  using Acc = acc_t<T>;
  constexpr int CB = channel_threads<VEC>() * VEC;
  const int64_t tiles = ceil_div(p.ho, kTileH) * ceil_div(p.wo, kTileW);
  const int64_t blocks_c = ceil_div(p.channels, CB);
  TORCH_CHECK(tiles <= INT32_MAX && blocks_c <= 65535 && p.n <= 65535, "fastconv_C::", kOp,
              ": output too large for one launch: ", tiles, " tiles x ", blocks_c, " channel blocks x ", p.n,
              " images (at most 2^31-1 x 65535 x 65535)");
  const int64_t smem = round_up(static_cast<int64_t>(p.kh) * p.kw * CB * sizeof(Acc), 16) +
                       static_cast<int64_t>(p.in_th) * p.in_tw * CB * sizeof(T);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(blocks_c), static_cast<unsigned>(p.n));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const T* xp = x.const_data_ptr<T>();
  const T* wp = weight.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  if (smem <= kMaxTileSmem) {
    auto kernel = depthwise_conv2d_kernel<T, VEC, true>;
    if (smem > 48 * 1024) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
    }
    kernel<<<grid, kThreads, smem, stream>>>(xp, wp, bias, yp, p);
  } else {
    depthwise_conv2d_kernel<T, VEC, false><<<grid, kThreads, 0, stream>>>(xp, wp, bias, yp, p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

int checked_int(int64_t v, const char* what) {
  TORCH_CHECK_VALUE(v <= INT32_MAX, "fastconv_C::", kOp, ": ", what, " must fit in 32 bits; got ", v);
  return static_cast<int>(v);
}

at::Tensor depthwise_conv2d_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                                 const std::optional<at::Tensor>& bias_in, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, c10::string_view activation) {
  const DepthwiseGeometry g =
      check_depthwise_args(kOp, c10::DeviceType::CUDA, x_in, weight_in, bias_in, stride, padding, dilation,
                           std::string_view(activation.data(), activation.size()));
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {g.n, g.channels, g.ho, g.wo});
  if (y.numel() == 0) {
    return y;
  }
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor bias = contiguous_or_undefined(bias_in);
  DepthwiseParams p{};
  p.n = g.n, p.channels = g.channels, p.h = g.h, p.w = g.w, p.ho = g.ho, p.wo = g.wo;
  p.kh = checked_int(g.kh, "kh"), p.kw = checked_int(g.kw, "kw");
  p.stride_h = checked_int(g.stride_h, "stride"), p.stride_w = checked_int(g.stride_w, "stride");
  p.pad_h = checked_int(g.pad_h, "padding"), p.pad_w = checked_int(g.pad_w, "padding");
  p.dil_h = checked_int(g.dil_h, "dilation"), p.dil_w = checked_int(g.dil_w, "dilation");
  p.tiles_w = checked_int(ceil_div(g.wo, kTileW), "the number of output tiles along W");
  p.in_th = checked_int(tile_input_extent(kTileH, g.kh, g.stride_h, g.dil_h), "the input tile height");
  p.in_tw = checked_int(tile_input_extent(kTileW, g.kw, g.stride_w, g.dil_w), "the input tile width");
  p.act = g.act;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_C::depthwise_conv2d", [&] {
    constexpr int kVec = kVec16<scalar_t>;
    const scalar_t* bp = data_or_null<scalar_t>(bias);
    if (vector_aligned({x.const_data_ptr(), y.const_data_ptr()}, g.channels, kVec, 16)) {
      launch<scalar_t, kVec>(x, weight, bp, y, p);
    } else {
      launch<scalar_t, 1>(x, weight, bp, y, p);
    }
  });
  return y;
}

}  // namespace
}  // namespace fastconv::cuda

TORCH_LIBRARY_IMPL(fastconv_C, CUDA, m) { m.impl(fastconv::cuda::kOp, &fastconv::cuda::depthwise_conv2d_cuda); }

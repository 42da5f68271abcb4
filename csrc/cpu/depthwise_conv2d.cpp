// depthwise_conv2d on CPU: y = act(depthwise_conv(x) + bias), any kernel size, stride, padding and dilation.
// Tiled by bands of output rows; each band's input rows are copied once into a zero-padded plane, and the
// sum over taps runs vectorised over channels (microkernels.h: depthwise).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/op_args.h"
#include "tiles.h"

namespace fastconv::cpu {
namespace {

constexpr const char* kOp = "depthwise_conv2d";

template <typename scalar_t>
void depthwise_kernel(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, Activation act,
                      at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const MicroKernels<acc_t>& mk = microkernels<acc_t>();
  const int64_t n = x.size(0), channels = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t kh = weight.size(2), kw = weight.size(3), ho = y.size(2), wo = y.size(3);
  const int64_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1], dh = dilation[0],
                dw = dilation[1];
  const Scratch<acc_t> wt = depthwise_weight<acc_t, scalar_t>(weight);
  const Scratch<acc_t> b = bias_vector<acc_t, scalar_t>(bias, channels);
  const int64_t wp = w + pw;
  const std::vector<int64_t> taps = depthwise_taps(kh, kw, dh, dw, wp, channels);
  const int64_t bytes_per_row = (sh * wp + wo) * channels * static_cast<int64_t>(sizeof(acc_t));
  const int64_t band = choose_band(ho, bytes_per_row);
  const auto in_rows = [&](int64_t rows) { return (rows - 1) * sh + (kh - 1) * dh + 1; };
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  for_each_band(
      n, ho, band,
      [&] {
        return std::pair(Scratch<acc_t>(Plane<acc_t>::elements(in_rows(band), w, pw, channels)),
                         Scratch<acc_t>(conversion_size<acc_t, scalar_t>(band * wo * channels)));
      },
      [&](auto& scratch, int64_t image, int64_t first, int64_t rows) {
        const Plane<acc_t> plane{scratch.first.get(), in_rows(rows), w, pw, channels, first * sh - ph};
        plane.fill(xp + image * h * w * channels, h);
        scalar_t* yb = yp + nhwc_offset(image, first, 0, 0, ho, wo, channels);
        acc_t* out = acc_output(yb, scratch.second.get());
        depthwise(mk, {rows, wo, channels, plane.pixel(0, -pw), sh * wp * channels, sw * channels, taps.data(),
                      kh * kw, wt.get(), b.get(), act, out, channels});
        store_acc(out, rows * wo * channels, yb);
      });
}

at::Tensor depthwise_conv2d_cpu(const at::Tensor& x_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                c10::string_view activation) {
  const DepthwiseGeometry g = check_depthwise_args(kOp, c10::DeviceType::CPU, x_in, weight, bias, stride, padding,
                                                   dilation, std::string_view(activation.data(), activation.size()));
  const Activation act = g.act;
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {g.n, g.channels, g.ho, g.wo});
  if (y.numel() == 0) {
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_C::depthwise_conv2d", [&] {
    depthwise_kernel<scalar_t>(x, weight, bias, stride, padding, dilation, act, y);
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv_C, CPU, m) { m.impl(kOp, &depthwise_conv2d_cpu); }

}  // namespace fastconv::cpu

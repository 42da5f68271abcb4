// asymmetric_conv_parallel on CPU: InceptionV3's parallel 1xn || nx1 convolutions over one input, fused:
//
//   y = cat(act(conv_a(x) + b_a), act(conv_b(x) + b_b)) on channels
//
// Any odd kernels ("same" padding, stride 1), as implicit GEMMs (tiles.h: conv_over_plane), tiled by bands
// of output rows of one image. One zero-padded plane of input rows per band feeds both GEMMs, which write
// their channel slices of one output tile.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/op_args.h"
#include "tiles.h"

namespace fastconv::cpu {
namespace {

constexpr const char* kOp = "asymmetric_conv_parallel";

template <typename scalar_t>
void parallel_kernel(const at::Tensor& x, const at::Tensor& weight_a, const std::optional<at::Tensor>& bias_a,
                     const at::Tensor& weight_b, const std::optional<at::Tensor>& bias_b, Activation act,
                     at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const MicroKernels<acc_t>& mk = microkernels<acc_t>();
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), w = x.size(3), cout = y.size(1);
  const PackedConv<acc_t> ca = pack_conv<acc_t, scalar_t>(weight_a, bias_a, mk.nr);
  const PackedConv<acc_t> cb = pack_conv<acc_t, scalar_t>(weight_b, bias_b, mk.nr);
  // One plane serves both convs: padded for the larger kernel extent along each axis.
  const int64_t ph = std::max(same_padding(ca.kh), same_padding(cb.kh));
  const int64_t pw = std::max(same_padding(ca.kw), same_padding(cb.kw));
  const int64_t wp = w + pw;
  // Both GEMMs write one tile: conv_a its panels first, conv_b the ones after.
  const int64_t ldc = ca.padded_n() + cb.padded_n();
  const int64_t bytes_per_row = (wp * cin + w * ldc) * static_cast<int64_t>(sizeof(acc_t));
  const int64_t band = choose_band(h, bytes_per_row);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();

  for_each_band(
      n, h, band,
      [&] {
        return std::pair(Scratch<acc_t>(Plane<acc_t>::elements(band + 2 * ph, w, pw, cin)),
                         Scratch<acc_t>(band * w * ldc));
      },
      [&](auto& buf, int64_t image, int64_t first, int64_t rows) {
        const Plane<acc_t> xs{buf.first.get(), rows + 2 * ph, w, pw, cin, first - ph};
        xs.fill(xp + image * h * w * cin, h);
        acc_t* out = buf.second.get();
        conv_over_plane(mk, xs, ph - same_padding(ca.kh), rows, ca, out, ldc, w * ldc);
        conv_over_plane(mk, xs, ph - same_padding(cb.kh), rows, cb, out + ca.padded_n(), ldc, w * ldc);
        scalar_t* yr = yp + nhwc_offset(image, first, 0, 0, h, w, cout);
        epilogue_rows(act, rows * w, ca.n, out, ldc, ca.bias.get(), yr, cout);
        epilogue_rows(act, rows * w, cb.n, out + ca.padded_n(), ldc, cb.bias.get(), yr + ca.n, cout);
      });
}

at::Tensor asymmetric_conv_parallel_cpu(const at::Tensor& x_in, const at::Tensor& weight_a,
                                        const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                                        const std::optional<at::Tensor>& bias_b, c10::string_view activation) {
  const AsymmetricParallelGeometry g = check_asymmetric_parallel_args(
      kOp, c10::DeviceType::CPU, x_in, weight_a, bias_a, weight_b, bias_b,
      std::string_view(activation.data(), activation.size()));
  const Activation act = g.act;
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {g.n, g.a.cout + g.b.cout, g.h, g.w});
  if (y.numel() == 0) {
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_C::asymmetric_conv_parallel",
                                  [&] { parallel_kernel<scalar_t>(x, weight_a, bias_a, weight_b, bias_b, act, y); });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv_C, CPU, m) { m.impl(kOp, &asymmetric_conv_parallel_cpu); }

}  // namespace fastconv::cpu

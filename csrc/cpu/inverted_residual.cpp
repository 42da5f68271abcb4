// inverted_residual on CPU: MobileNetV2's block, fused.
//
//   y = project(act(depthwise_k(act(expand(x) + b_e)) + b_d)) + b_p (+ x)
//
// Tiled by bands of output rows of one image. Per band, the input rows it needs (band plus halo) are copied
// into a zero-padded plane X, expanded by one GEMM into a plane E of the same geometry, the depthwise runs on E
// into D [band pixels, hidden], and the projection GEMM writes the output through the epilogue. The t-times
// expanded tensor exists only for one band at a time, in per-thread scratch. Padding applies to E: pixels
// outside the image are zero after the expansion, not act(b_e). With t = 1 (no expand weight) E is X.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/op_args.h"
#include "tiles.h"

namespace fastconv::cpu {
namespace {

constexpr const char* kOp = "inverted_residual";

template <typename scalar_t>
void inverted_residual_kernel(const at::Tensor& x, const std::optional<at::Tensor>& expand_weight,
                              const std::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                              const std::optional<at::Tensor>& dw_bias, const at::Tensor& project_weight,
                              const std::optional<at::Tensor>& project_bias, int64_t stride, bool residual,
                              Activation act, at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const MicroKernels<acc_t>& mk = microkernels<acc_t>();
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t hidden = dw_weight.size(0), k = dw_weight.size(2), pad = same_padding(k);
  const int64_t cout = y.size(1), ho = y.size(2), wo = y.size(3);
  const bool expand = expand_weight.has_value();

  std::optional<PackedConv<acc_t>> expand_conv;
  if (expand) {
    expand_conv.emplace(pack_conv<acc_t, scalar_t>(*expand_weight, expand_bias, mk.nr));
  }
  // E holds whole GEMM panels when it is the expansion's output, else it is X itself.
  const int64_t lde = expand ? expand_conv->padded_n() : cin;
  const Scratch<acc_t> dw_w = depthwise_weight<acc_t, scalar_t>(dw_weight);
  const Scratch<acc_t> dw_b = bias_vector<acc_t, scalar_t>(dw_bias, hidden);
  const PackedConv<acc_t> project_conv = pack_conv<acc_t, scalar_t>(project_weight, project_bias, mk.nr);
  const int64_t ldp = project_conv.padded_n();

  const int64_t wp = w + pad;
  const std::vector<int64_t> taps = depthwise_taps(k, k, 1, 1, wp, lde);
  const auto in_rows = [&](int64_t rows) { return (rows - 1) * stride + k; };
  const int64_t bytes_per_row =
      (stride * wp * (cin + (expand ? lde : 0)) + wo * (hidden + ldp)) * static_cast<int64_t>(sizeof(acc_t));
  const int64_t band = balance_band(n, ho, choose_band(ho, bytes_per_row), 3);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();

  struct Buffers {
    Scratch<acc_t> x, e, d, p;
  };
  for_each_band(
      n, ho, band,
      [&] {
        const int64_t plane = Plane<acc_t>::elements(in_rows(band), w, pad, 1);
        return Buffers{Scratch<acc_t>(plane * cin), Scratch<acc_t>(expand ? plane * lde : 0),
                       Scratch<acc_t>(band * wo * hidden), Scratch<acc_t>(band * wo * ldp)};
      },
      [&](Buffers& buf, int64_t image, int64_t first, int64_t rows) {
        const int64_t row0 = first * stride - pad;
        const Plane<acc_t> xs{buf.x.get(), in_rows(rows), w, pad, cin, row0};
        xs.fill(xp + image * h * w * cin, h);
        Plane<acc_t> es = xs;
        if (expand) {
          es = Plane<acc_t>{buf.e.get(), xs.rows, w, pad, lde, row0};
          // Only the plane rows inside the image are expanded; the others stay zero.
          const int64_t r0 = std::max<int64_t>(0, -row0), r1 = std::min(xs.rows, h - row0);
          conv_over_plane(mk, xs, r0, r1 - r0, *expand_conv, es.pixel(r0, 0), lde, wp * lde, true, act);
          es.zero_padding(h);
        }
        acc_t* d = buf.d.get();
        depthwise(mk, {rows, wo, hidden, es.pixel(0, -pad), stride * wp * lde, stride * lde, taps.data(), k * k,
                      dw_w.get(), dw_b.get(), act, d, hidden});
        gemm(mk, GemmArgs<acc_t>{.m = rows * wo, .n = cout, .k = hidden, .a = d, .lda = hidden,
                                 .b = project_conv.tap(0), .c = buf.p.get(), .ldc = ldp});
        // The residual needs stride 1 and cout == cin, so the output band is the same pixels of x.
        const scalar_t* res = residual ? xp + nhwc_offset(image, first, 0, 0, h, w, cin) : nullptr;
        epilogue_rows(Activation::None, rows * wo, cout, buf.p.get(), ldp, project_conv.bias.get(),
                      yp + nhwc_offset(image, first, 0, 0, ho, wo, cout), cout, res, cin);
      });
}

at::Tensor inverted_residual_cpu(const at::Tensor& x_in, const std::optional<at::Tensor>& expand_weight_in,
                                 const std::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                                 const std::optional<at::Tensor>& dw_bias, const at::Tensor& project_weight,
                                 const std::optional<at::Tensor>& project_bias, int64_t stride, bool residual,
                                 c10::string_view activation) {
  const InvertedResidualGeometry g = check_inverted_residual_args(
      kOp, c10::DeviceType::CPU, x_in, expand_weight_in, expand_bias, dw_weight, dw_bias, project_weight,
      project_bias, stride, residual, std::string_view(activation.data(), activation.size()));
  const std::optional<at::Tensor> expand_weight = g.expand ? expand_weight_in : std::nullopt;
  const Activation act = g.act;
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {g.n, g.cout, g.ho, g.wo});
  if (y.numel() == 0) {
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_C::inverted_residual", [&] {
    inverted_residual_kernel<scalar_t>(x, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                                       project_bias, stride, residual, act, y);
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv_C, CPU, m) { m.impl(kOp, &inverted_residual_cpu); }

}  // namespace fastconv::cpu

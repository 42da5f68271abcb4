// Argument checks and output geometry of each kernel op, written once for every device's registration: each
// returns what its kernels need (sizes, parsed activation) after checking the arguments as checks.h does.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string_view>

#include "activation.h"
#include "checks.h"
#include "conv_geometry.h"

namespace fastconv {

struct DepthwiseGeometry {
  int64_t n, channels, h, w;  // x [N, C, H, W]
  int64_t kh, kw;             // weight [C, 1, kh, kw]
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t ho, wo;  // y [N, C, ho, wo]
  Activation act;
};

inline DepthwiseGeometry check_depthwise_args(const char* op, c10::DeviceType device, const at::Tensor& x,
                                              const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, std::string_view activation) {
  check_input(op, x);
  check_device(op, x, device);
  DepthwiseGeometry g{};
  g.n = x.size(0), g.channels = x.size(1), g.h = x.size(2), g.w = x.size(3);
  check_like(op, "weight", weight, x, {g.channels, 1, -1, -1});
  check_bias(op, "bias", bias, x, g.channels);
  TORCH_CHECK_VALUE(stride.size() == 2 && stride[0] >= 1 && stride[1] >= 1, "fastconv_C::", op,
                    ": stride must be two integers >= 1; got ", stride);
  TORCH_CHECK_VALUE(padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0, "fastconv_C::", op,
                    ": padding must be two integers >= 0; got ", padding);
  TORCH_CHECK_VALUE(dilation.size() == 2 && dilation[0] >= 1 && dilation[1] >= 1, "fastconv_C::", op,
                    ": dilation must be two integers >= 1; got ", dilation);
  g.kh = weight.size(2), g.kw = weight.size(3);
  TORCH_CHECK_VALUE(g.kh >= 1 && g.kw >= 1, "fastconv_C::", op, ": weight must have a kernel of at least 1x1; got ",
                    g.kh, "x", g.kw);
  g.act = parse_activation(op, activation);
  g.stride_h = stride[0], g.stride_w = stride[1], g.pad_h = padding[0], g.pad_w = padding[1];
  g.dil_h = dilation[0], g.dil_w = dilation[1];
  g.ho = conv_output_size(g.h, g.kh, g.stride_h, g.pad_h, g.dil_h);
  g.wo = conv_output_size(g.w, g.kw, g.stride_w, g.pad_w, g.dil_w);
  TORCH_CHECK_VALUE(g.ho >= 1 && g.wo >= 1, "fastconv_C::", op, ": x of spatial size ", g.h, "x", g.w,
                    " is smaller than the ", g.kh, "x", g.kw, " kernel (dilation ", dilation, ") with padding ",
                    padding);
  return g;
}

struct PointwiseGeometry {
  int64_t n, cin, h, w, cout;  // x [N, cin, H, W], weight [cout, cin, 1, 1], y [N, cout, H, W]
  Activation act;
};

inline PointwiseGeometry check_pointwise_args(const char* op, c10::DeviceType device, const at::Tensor& x,
                                              const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                              std::string_view activation,
                                              const std::optional<at::Tensor>& residual) {
  check_input(op, x);
  check_device(op, x, device);
  PointwiseGeometry g{};
  g.n = x.size(0), g.cin = x.size(1), g.h = x.size(2), g.w = x.size(3);
  check_like(op, "weight", weight, x, {-1, g.cin, 1, 1});
  g.cout = weight.size(0);
  check_bias(op, "bias", bias, x, g.cout);
  g.act = parse_activation(op, activation);
  if (residual.has_value() && residual->defined()) {
    check_like(op, "residual", *residual, x, {g.n, g.cout, g.h, g.w});
  }
  return g;
}

struct InvertedResidualGeometry {
  int64_t n, cin, h, w;  // x [N, cin, H, W]
  int64_t hidden;        // expand_weight [hidden, cin, 1, 1] (hidden == cin without expansion)
  int64_t k, pad;        // dw_weight [hidden, 1, k, k], odd k, padding k / 2
  int64_t cout;          // project_weight [cout, hidden, 1, 1]
  int64_t stride, ho, wo;  // y [N, cout, ho, wo]
  bool expand, residual;
  Activation act;
};

inline InvertedResidualGeometry check_inverted_residual_args(
    const char* op, c10::DeviceType device, const at::Tensor& x, const std::optional<at::Tensor>& expand_weight,
    const std::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight, const std::optional<at::Tensor>& dw_bias,
    const at::Tensor& project_weight, const std::optional<at::Tensor>& project_bias, int64_t stride, bool residual,
    std::string_view activation) {
  check_input(op, x);
  check_device(op, x, device);
  InvertedResidualGeometry g{};
  g.n = x.size(0), g.cin = x.size(1), g.h = x.size(2), g.w = x.size(3);
  g.expand = expand_weight.has_value() && expand_weight->defined();
  g.hidden = g.cin;
  if (g.expand) {
    check_like(op, "expand_weight", *expand_weight, x, {-1, g.cin, 1, 1});
    g.hidden = expand_weight->size(0);
    check_bias(op, "expand_bias", expand_bias, x, g.hidden);
  } else {
    TORCH_CHECK_VALUE(!(expand_bias.has_value() && expand_bias->defined()), "fastconv_C::", op,
                      ": expand_bias must be None when expand_weight is None (expansion factor 1)");
  }
  check_like(op, "dw_weight", dw_weight, x, {g.hidden, 1, -1, -1});
  g.k = dw_weight.size(2);
  TORCH_CHECK_VALUE(dw_weight.size(3) == g.k && g.k % 2 == 1, "fastconv_C::", op,
                    ": dw_weight must be a square depthwise kernel of odd size (3x3, 5x5); got ", g.k, "x",
                    dw_weight.size(3));
  check_bias(op, "dw_bias", dw_bias, x, g.hidden);
  check_like(op, "project_weight", project_weight, x, {-1, g.hidden, 1, 1});
  g.cout = project_weight.size(0);
  check_bias(op, "project_bias", project_bias, x, g.cout);
  TORCH_CHECK_VALUE(stride >= 1, "fastconv_C::", op, ": stride must be >= 1; got ", stride);
  TORCH_CHECK_VALUE(!residual || (stride == 1 && g.cout == g.cin), "fastconv_C::", op,
                    ": residual=True needs stride 1 and as many output as input channels; got stride ", stride, ", ",
                    g.cin, " -> ", g.cout, " channels");
  g.stride = stride;
  g.residual = residual;
  g.act = parse_activation(op, activation);
  g.pad = same_padding(g.k);
  g.ho = conv_output_size(g.h, g.k, stride, g.pad, 1);
  g.wo = conv_output_size(g.w, g.k, stride, g.pad, 1);
  return g;
}

// One "same"-padded, stride-1 convolution with an odd kh x kw kernel: weight [cout, cin, kh, kw].
struct SameConvGeometry {
  int64_t cin, cout, kh, kw;
};

inline SameConvGeometry check_same_conv(const char* op, const char* weight_name, const char* bias_name,
                                        const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                        const at::Tensor& x, int64_t cin) {
  check_like(op, weight_name, weight, x, {-1, cin, -1, -1});
  check_odd_kernel(op, weight_name, weight);
  check_bias(op, bias_name, bias, x, weight.size(0));
  return {cin, weight.size(0), weight.size(2), weight.size(3)};
}

struct AsymmetricPairGeometry {
  int64_t n, cin, h, w;        // x [N, cin, H, W]; y [N, second.cout, H, W]
  SameConvGeometry first;      // weight1 [cmid, cin, kh1, kw1]
  SameConvGeometry second;     // weight2 [cout, cmid, kh2, kw2]
  Activation act;
};

inline AsymmetricPairGeometry check_asymmetric_pair_args(const char* op, c10::DeviceType device, const at::Tensor& x,
                                                         const at::Tensor& weight1,
                                                         const std::optional<at::Tensor>& bias1,
                                                         const at::Tensor& weight2,
                                                         const std::optional<at::Tensor>& bias2,
                                                         std::string_view activation) {
  check_input(op, x);
  check_device(op, x, device);
  AsymmetricPairGeometry g{};
  g.n = x.size(0), g.cin = x.size(1), g.h = x.size(2), g.w = x.size(3);
  g.first = check_same_conv(op, "weight1", "bias1", weight1, bias1, x, g.cin);
  g.second = check_same_conv(op, "weight2", "bias2", weight2, bias2, x, g.first.cout);
  g.act = parse_activation(op, activation);
  return g;
}

struct AsymmetricParallelGeometry {
  int64_t n, cin, h, w;  // x [N, cin, H, W]; y [N, a.cout + b.cout, H, W]
  SameConvGeometry a;    // weight_a [cout_a, cin, kh_a, kw_a]: channels [0, cout_a) of y
  SameConvGeometry b;    // weight_b [cout_b, cin, kh_b, kw_b]: channels [cout_a, cout_a + cout_b) of y
  Activation act;
};

inline AsymmetricParallelGeometry check_asymmetric_parallel_args(
    const char* op, c10::DeviceType device, const at::Tensor& x, const at::Tensor& weight_a,
    const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b, const std::optional<at::Tensor>& bias_b,
    std::string_view activation) {
  check_input(op, x);
  check_device(op, x, device);
  AsymmetricParallelGeometry g{};
  g.n = x.size(0), g.cin = x.size(1), g.h = x.size(2), g.w = x.size(3);
  g.a = check_same_conv(op, "weight_a", "bias_a", weight_a, bias_a, x, g.cin);
  g.b = check_same_conv(op, "weight_b", "bias_b", weight_b, bias_b, x, g.cin);
  g.act = parse_activation(op, activation);
  return g;
}

}  // namespace fastconv

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

}  // namespace fastconv

// Argument checks and outputs of the kernel ops (host code, shared by the CPU and CUDA registrations). fastconv/ops.py
// checks the same things first; these keep a direct call of torch.ops.fastconv_C.<op> from reading out of
// bounds. They raise ValueError in Python, as fastconv/ops.py does, naming the op and the argument, what it
// got and what it expects.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "activation.h"

namespace fastconv {

inline std::string shape_string(std::initializer_list<int64_t> shape) {
  std::string s = "[";
  for (auto it = shape.begin(); it != shape.end(); ++it) {
    s += (it == shape.begin() ? "" : ", ") + (*it < 0 ? std::string("*") : std::to_string(*it));
  }
  return s + "]";
}

// x: the input every other tensor argument is compared with.
inline void check_input(const char* op, const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.defined(), "fastconv_C::", op, ": x is undefined");
  TORCH_CHECK_VALUE(x.layout() == at::kStrided, "fastconv_C::", op, ": x must be a strided (dense) tensor; got ",
              x.layout());
  TORCH_CHECK_VALUE(x.dim() == 4, "fastconv_C::", op, ": x must be 4-D [N, C, H, W]; got ", x.dim(),
              "-D with shape ", x.sizes());
  const auto dtype = x.scalar_type();
  TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
              "fastconv_C::", op, ": x must be float32, float16, bfloat16 or float64; got ", dtype);
}

inline void check_device(const char* op, const at::Tensor& x, c10::DeviceType expected) {
  TORCH_CHECK_VALUE(x.device().type() == expected, "fastconv_C::", op, ": this kernel runs ",
              c10::DeviceTypeName(expected), " tensors; x is on ", x.device());
}

// A tensor argument other than x: same dtype and device as x, dense, of `shape` (-1: any extent).
inline void check_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x,
                       std::initializer_list<int64_t> shape) {
  TORCH_CHECK_VALUE(t.defined(), "fastconv_C::", op, ": ", name, " is undefined");
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, "fastconv_C::", op, ": ", name,
              " must be a strided (dense) tensor; got ", t.layout());
  TORCH_CHECK_VALUE(t.scalar_type() == x.scalar_type(), "fastconv_C::", op, ": ", name, " must have the dtype of x (",
              x.scalar_type(), "); got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == x.device(), "fastconv_C::", op, ": ", name, " must be on the device of x (",
              x.device(), "); got ", t.device());
  bool ok = t.dim() == static_cast<int64_t>(shape.size());
  int64_t d = 0;
  for (auto it = shape.begin(); ok && it != shape.end(); ++it, ++d) {
    ok = *it < 0 || t.size(d) == *it;
  }
  TORCH_CHECK_VALUE(ok, "fastconv_C::", op, ": ", name, " must have shape ", shape_string(shape), "; got ", t.sizes());
}

inline void check_bias(const char* op, const char* name, const std::optional<at::Tensor>& bias,
                       const at::Tensor& x, int64_t channels) {
  if (bias.has_value() && bias->defined()) {
    check_like(op, name, *bias, x, {channels});
  }
}

// A kernel of a "same"-padded convolution: both extents odd, so that padding k // 2 keeps the size.
inline void check_odd_kernel(const char* op, const char* name, const at::Tensor& weight) {
  TORCH_CHECK_VALUE(weight.size(2) % 2 == 1 && weight.size(3) % 2 == 1, "fastconv_C::", op, ": ", name,
              " must have an odd kernel (kh x kw, both odd); got ", weight.size(2), "x", weight.size(3));
}

// The output of a kernel op: [N, C, H, W] in channels_last, with x's dtype and device.
inline at::Tensor empty_channels_last(const at::Tensor& x, at::IntArrayRef shape) {
  return at::empty(shape, x.options().memory_format(at::MemoryFormat::ChannelsLast));
}

// An optional tensor argument made contiguous in `format`, or an undefined tensor when it was not given.
inline at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t,
                                          at::MemoryFormat format = at::MemoryFormat::Contiguous) {
  return t.has_value() && t->defined() ? t->contiguous(format) : at::Tensor();
}

// The data of t as T*, or null for an undefined tensor (an optional argument not given).
template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

inline Activation parse_activation(const char* op, std::string_view activation) {
  if (activation == "none") {
    return Activation::None;
  }
  if (activation == "relu") {
    return Activation::Relu;
  }
  if (activation == "relu6") {
    return Activation::Relu6;
  }
  TORCH_CHECK_VALUE(false, "fastconv_C::", op, ": activation must be one of 'none', 'relu', 'relu6'; got '",
                    std::string(activation), "'");
  return Activation::None;  // unreachable: the check above throws
}

}  // namespace fastconv

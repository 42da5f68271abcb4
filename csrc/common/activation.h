// Activations and the fused epilogue of every fastconv kernel: y = act(acc + bias + residual).
#pragma once

#include <cstdint>

#include "macros.h"

namespace fastconv {

// Parsed once per call from the op's `activation` string (checks.h: parse_activation).
enum class Activation : int32_t { None = 0, Relu = 1, Relu6 = 2 };

// Comparisons are written so that NaN propagates, as torch.relu and torch.nn.functional.hardtanh do.
template <Activation A, typename T>
FASTCONV_HOST_DEVICE T activate(T v) {
  if constexpr (A == Activation::Relu) {
    return v < T(0) ? T(0) : v;
  } else if constexpr (A == Activation::Relu6) {
    return v < T(0) ? T(0) : (v > T(6) ? T(6) : v);
  } else {
    return v;
  }
}

template <typename T>
FASTCONV_HOST_DEVICE T activate(T v, Activation a) {
  switch (a) {
    case Activation::Relu:
      return activate<Activation::Relu>(v);
    case Activation::Relu6:
      return activate<Activation::Relu6>(v);
    default:
      return v;
  }
}

// The epilogue every op applies to its accumulator: bias, then residual, then the activation
// (the residual enters before the activation, as in cuDNN's conv-add-relu).
template <Activation A, typename T>
FASTCONV_HOST_DEVICE T epilogue(T acc, T bias, T residual) {
  return activate<A>(acc + bias + residual);
}

}  // namespace fastconv

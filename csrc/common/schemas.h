// Schemas of the kernel ops of fastconv._C (namespace fastconv_C). The public ops fastconv::<op> are
// registered in Python (fastconv/ops.py), which normalises the arguments before calling these: x and any
// residual channels_last, weights and biases contiguous in PyTorch's layout, strides as integer lists.
#pragma once

namespace fastconv {

inline constexpr const char* kOpSchemas[] = {
    "depthwise_conv2d(Tensor x, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, "
    "str activation) -> Tensor",
    "pointwise_conv2d(Tensor x, Tensor weight, Tensor? bias, str activation, Tensor? residual) -> Tensor",
    "inverted_residual(Tensor x, Tensor? expand_weight, Tensor? expand_bias, Tensor dw_weight, "
    "Tensor? dw_bias, Tensor project_weight, Tensor? project_bias, int stride, bool residual, "
    "str activation) -> Tensor",
    "asymmetric_conv_pair(Tensor x, Tensor weight1, Tensor? bias1, Tensor weight2, Tensor? bias2, "
    "str activation) -> Tensor",
    "asymmetric_conv_parallel(Tensor x, Tensor weight_a, Tensor? bias_a, Tensor weight_b, Tensor? bias_b, "
    "str activation) -> Tensor",
};

}  // namespace fastconv

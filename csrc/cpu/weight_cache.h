// Packed weights of pinned tensors, so that a kernel packs a weight the caller keeps constant once rather than
// on every call.
//
// fastconv_C::pin_weights(weights) declares tensors constant until they are freed: fastconv's modules pin the
// BatchNorm-folded weights they own, which nothing writes after the fold. Only pinned weights are cached: a
// change through `tensor.data` bypasses the version counter, so the packed copy of any other weight could go
// stale unseen. A cached packing is still dropped when its weight's version counter or data pointer changes,
// and pinning a tensor again drops it too (what fastconv's modules do after `.eval()`).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <optional>

namespace fastconv::cpu {

// The packing of (weight, bias) in `layout` (what decides the packed form besides the tensors: accumulator
// type, panel width): the cached one when weight and bias (if any) are pinned and unchanged since it was made,
// else pack(), kept for later calls when the tensors are pinned.
std::shared_ptr<const void> cached_packing(const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                           int64_t layout, const std::function<std::shared_ptr<const void>()>& pack);

}  // namespace fastconv::cpu

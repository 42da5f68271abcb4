// The packed-weight cache of weight_cache.h and the op fastconv_C::pin_weights that feeds it.
#include "weight_cache.h"

#include <torch/library.h>

#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fastconv::cpu {
namespace {

// A tensor's identity and state: the weak pointer keeps the TensorImpl's address from being reused by another
// tensor while the entry lives, so that the address identifies the tensor.
struct TensorState {
  c10::weak_intrusive_ptr<c10::TensorImpl> impl;
  uint32_t version;
  const void* data;

  static TensorState of(const at::Tensor& t) {
    return {c10::weak_intrusive_ptr<c10::TensorImpl>(t.getIntrusivePtr()), t._version(), t.const_data_ptr()};
  }

  bool describes(const at::Tensor& t) const {
    return !impl.expired() && impl._unsafe_get_target() == t.unsafeGetTensorImpl() && version == t._version() &&
           data == t.const_data_ptr();
  }
};

struct Packing {
  int64_t layout;
  TensorState weight;
  std::optional<TensorState> bias;
  std::shared_ptr<const void> packed;
};

class WeightCache {
 public:
  void pin(const at::Tensor& t) {
    if (!t.defined() || t.is_inference()) {
      return;  // inference tensors have no version counter; they are packed on every call
    }
    const std::lock_guard<std::mutex> lock(mutex_);
    sweep();
    // Pinning again drops the packings made from the tensor (it may have changed through `.data`).
    pinned_.insert_or_assign(t.unsafeGetTensorImpl(), TensorState::of(t));
    std::erase_if(packings_, [&](const Packing& p) {
      return p.weight.impl._unsafe_get_target() == t.unsafeGetTensorImpl() ||
             (p.bias.has_value() && p.bias->impl._unsafe_get_target() == t.unsafeGetTensorImpl());
    });
  }

  std::shared_ptr<const void> get(const at::Tensor& weight, const std::optional<at::Tensor>& bias_in,
                                  int64_t layout, const std::function<std::shared_ptr<const void>()>& pack) {
    const at::Tensor* bias = bias_in.has_value() && bias_in->defined() ? &*bias_in : nullptr;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!is_pinned(weight) || (bias != nullptr && !is_pinned(*bias))) {
        return pack();
      }
      for (const Packing& p : packings_) {
        if (p.layout == layout && p.weight.describes(weight) && p.bias.has_value() == (bias != nullptr) &&
            (bias == nullptr || p.bias->describes(*bias))) {
          return p.packed;
        }
      }
    }
    std::shared_ptr<const void> packed = pack();
    const std::lock_guard<std::mutex> lock(mutex_);
    sweep();
    // A packing of an older version of these tensors is stale: replace it.
    std::erase_if(packings_, [&](const Packing& p) {
      return p.layout == layout && p.weight.impl._unsafe_get_target() == weight.unsafeGetTensorImpl();
    });
    packings_.push_back({layout, TensorState::of(weight),
                         bias != nullptr ? std::optional<TensorState>(TensorState::of(*bias)) : std::nullopt, packed});
    return packed;
  }

 private:
  bool is_pinned(const at::Tensor& t) const {
    if (t.is_inference()) {
      return false;
    }
    const auto it = pinned_.find(t.unsafeGetTensorImpl());
    return it != pinned_.end() && !it->second.impl.expired();
  }

  // Forgets freed tensors and their packings.
  void sweep() {
    std::erase_if(pinned_, [](const auto& kv) { return kv.second.impl.expired(); });
    std::erase_if(packings_, [](const Packing& p) {
      return p.weight.impl.expired() || (p.bias.has_value() && p.bias->impl.expired());
    });
  }

  std::mutex mutex_;
  std::unordered_map<const c10::TensorImpl*, TensorState> pinned_;
  std::vector<Packing> packings_;
};

WeightCache& cache() {
  static WeightCache* instance = new WeightCache();  // never destroyed: kernels may run during shutdown
  return *instance;
}

void pin_weights(at::TensorList weights) {
  for (const at::Tensor& t : weights) {
    cache().pin(t);
  }
}

}  // namespace

std::shared_ptr<const void> cached_packing(const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                           int64_t layout, const std::function<std::shared_ptr<const void>()>& pack) {
  return cache().get(weight, bias, layout, pack);
}

TORCH_LIBRARY_FRAGMENT(fastconv_C, m) { m.def("pin_weights(Tensor[] weights) -> ()", &pin_weights); }

}  // namespace fastconv::cpu

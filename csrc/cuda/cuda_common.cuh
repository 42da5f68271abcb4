// Device-side pieces shared by the CUDA kernels: vector access along channels and fp32 conversion of the
// storage dtypes.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace fastconv::cuda {

// VEC elements of T moved as one access (V{} is VEC zeros): 16 bytes when VEC * sizeof(T) == 16, so that a warp reads whole
// 128-byte lines of NHWC channels.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// Elements per 16-byte access.
template <typename T>
inline constexpr int kVec16 = 16 / static_cast<int>(sizeof(T));

// fp32 for the 16-bit and 32-bit dtypes, fp64 for fp64.
template <typename T>
using acc_t = at::opmath_type<T>;

// The CUDA type of a 16-bit storage dtype, as WMMA / mma.sync fragments name it.
template <typename T>
struct WmmaType;
template <>
struct WmmaType<c10::Half> {
  using type = __half;
};
template <>
struct WmmaType<c10::BFloat16> {
  using type = __nv_bfloat16;
};

// True when every pointer is aligned to `bytes` and `channels` is a multiple of `vec`, so that each
// NHWC pixel's channel run starts on a vector boundary.
inline bool vector_aligned(std::initializer_list<const void*> ptrs, int64_t channels, int vec, int bytes) {
  if (channels % vec != 0) {
    return false;
  }
  for (const void* p : ptrs) {
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % bytes != 0) {
      return false;
    }
  }
  return true;
}

}  // namespace fastconv::cuda

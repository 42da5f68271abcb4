// Run-time choice of the micro-kernels (microkernels.h) from the CPU's features.
#include "microkernels.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace fastconv::cpu {
namespace {

bool cpu_has_avx2_fma() {
#if defined(FASTCONV_CPU_AVX2)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// "avx2" when the CPU has AVX2 and FMA, else "generic"; FASTCONV_CPU_ISA can only lower the choice.
bool use_avx2() {
  const char* env = std::getenv("FASTCONV_CPU_ISA");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "avx2") == 0) {
    return cpu_has_avx2_fma();
  }
  if (std::strcmp(env, "generic") == 0) {
    return false;
  }
  throw std::invalid_argument(std::string("environment variable FASTCONV_CPU_ISA must be 'generic' or 'avx2'; got '") +
                              env + "'");
}

}  // namespace

#if defined(FASTCONV_CPU_AVX2)
#define FASTCONV_SELECT(getter) (use_avx2() ? avx2::getter() : generic::getter())
#else
#define FASTCONV_SELECT(getter) (use_avx2(), generic::getter())
#endif

template <>
const MicroKernels<float>& microkernels<float>() {
  static const MicroKernels<float> kernels = FASTCONV_SELECT(microkernels_f32);
  return kernels;
}

template <>
const MicroKernels<double>& microkernels<double>() {
  static const MicroKernels<double> kernels = FASTCONV_SELECT(microkernels_f64);
  return kernels;
}

}  // namespace fastconv::cpu

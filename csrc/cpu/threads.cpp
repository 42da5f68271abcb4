// fastconv_C::cpu_kernel_threads(): how many threads an at::parallel_for of the CPU kernels runs on.
//
// at::parallel_for is a header template, compiled into this extension: with torch's OpenMP backend it is an
// `omp parallel` region that runs on one thread unless the extension is built with OpenMP too (setup.py,
// openmp_flags). This op runs one such region over torch's thread count and reports the threads that took
// part, so that a test, or a user puzzled by single-core kernels, can see which build they have.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace fastconv::cpu {
namespace {

int64_t cpu_kernel_threads() {
  const int64_t threads = at::get_num_threads();
  // One item per thread (grain 1); each thread marks its own entry.
  std::vector<char> ran(static_cast<size_t>(threads), 0);
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { ran[static_cast<size_t>(at::get_thread_num())] = 1; });
  return std::count(ran.begin(), ran.end(), char{1});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastconv_C, m) {
  m.def("cpu_kernel_threads() -> int", &cpu_kernel_threads);
}

}  // namespace fastconv::cpu

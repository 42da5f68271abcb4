// Building blocks of the CPU op kernels: scratch buffers, packed weights, zero-padded input tiles
// ("planes"), the implicit-GEMM convolution over a plane, the epilogue, and the choice of tile size.
//
// Every kernel works tile by tile: it converts the input rows a tile needs to the accumulator type (float,
// or double for float64) in a per-thread plane, runs the micro-kernels (microkernels.h) on it, and writes
// the tile through the epilogue, which adds bias and residual, applies the activation and rounds once to the
// output dtype.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "../common/activation.h"
#include "../common/conv_geometry.h"
#include "microkernels.h"
#include "scratch_pool.h"
#include "weight_cache.h"

namespace fastconv::cpu {

// Working set one task aims for: about what a core's L2 cache holds.
inline constexpr int64_t kTileBytes = 1 << 20;

// Work (multiply-adds, or elements moved) below which a loop is not worth splitting over threads.
inline constexpr int64_t kGrainWork = 1 << 15;

// The grain of an at::parallel_for whose items each cost `work_per_item`.
inline int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, work_per_item));
}

// A 64-byte aligned, uninitialised buffer of n elements, from the thread's scratch pool (scratch_pool.h): a
// kernel called again with the same shapes reuses the blocks its last call released.
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t n) {
    if (n > 0) {
      data_ = static_cast<T*>(scratch_acquire(static_cast<size_t>(n) * sizeof(T), bytes_));
    }
  }
  ~Scratch() { scratch_release(data_, bytes_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Scratch(Scratch&& other) noexcept : bytes_(other.bytes_), data_(other.data_) { other.data_ = nullptr; }
  Scratch& operator=(Scratch&&) = delete;

  T* get() const { return data_; }

 private:
  size_t bytes_ = 0;  // the block's capacity, for scratch_release
  T* data_ = nullptr;
};

// src[0, n) as acc_t: src itself when the types match, else converted into `scratch`.
template <typename acc_t, typename scalar_t>
const acc_t* as_acc(const scalar_t* src, int64_t n, acc_t* scratch) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    return src;
  } else {
    for (int64_t i = 0; i < n; ++i) {
      scratch[i] = static_cast<acc_t>(src[i]);
    }
    return scratch;
  }
}

// Where a kernel writes acc_t results bound for `y`: y itself when the types match, else `scratch`, from which
// store_acc converts them.
template <typename acc_t, typename scalar_t>
acc_t* acc_output(scalar_t* y, acc_t* scratch) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    return y;
  } else {
    return scratch;
  }
}

template <typename acc_t, typename scalar_t>
void store_acc(const acc_t* src, int64_t n, scalar_t* y) {
  if constexpr (!std::is_same_v<acc_t, scalar_t>) {
    at::parallel_for(0, n, kGrainWork, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        y[i] = static_cast<scalar_t>(src[i]);
      }
    });
  }
}

// Elements of a scratch buffer for as_acc and acc_output: none when no conversion is needed.
template <typename acc_t, typename scalar_t>
constexpr int64_t conversion_size(int64_t n) {
  return std::is_same_v<acc_t, scalar_t> ? 0 : n;
}

// A bias as acc_t, zero-filled to `padded` entries (all zero when there is no bias), so that the epilogue
// always adds one.
template <typename acc_t, typename scalar_t>
Scratch<acc_t> bias_vector(const std::optional<at::Tensor>& bias, int64_t padded) {
  Scratch<acc_t> out(padded);
  std::fill_n(out.get(), padded, acc_t(0));
  if (bias.has_value() && bias->defined()) {
    const at::Tensor b = bias->contiguous();
    const scalar_t* src = b.const_data_ptr<scalar_t>();
    for (int64_t i = 0; i < b.numel(); ++i) {
      out.get()[i] = static_cast<acc_t>(src[i]);
    }
  }
  return out;
}

// A buffer shared by the copies of a PackedConv (and by the packed-weight cache).
template <typename T>
class SharedScratch {
 public:
  explicit SharedScratch(Scratch<T>&& s) : data_(std::make_shared<Scratch<T>>(std::move(s))) {}
  T* get() const { return data_->get(); }

 private:
  std::shared_ptr<Scratch<T>> data_;
};

// A conv weight [n, k, kh, kw] and its bias as GEMM operands. One B per tap t = i * kw + j:
// B_t[k, n] = weight[n, k, i, j], in the panel layout of GemmArgs::b (ceil(n / nr) panels of [k][nr],
// zero-padded to whole panels); the bias zero-padded likewise. Copies share the buffers.
template <typename acc_t>
struct PackedConv {
  SharedScratch<acc_t> weight, bias;
  int64_t n, k, kh, kw, nr;

  int64_t padded_n() const { return round_up(n, nr); }
  const acc_t* tap(int64_t t) const { return weight.get() + t * padded_n() * k; }
};

template <typename acc_t, typename scalar_t>
PackedConv<acc_t> pack_conv_now(const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t nr) {
  const at::Tensor w = weight.contiguous();
  const int64_t n = w.size(0), k = w.size(1), kh = w.size(2), kw = w.size(3), taps = kh * kw;
  PackedConv<acc_t> packed{SharedScratch<acc_t>(Scratch<acc_t>(taps * round_up(n, nr) * k)),
                           SharedScratch<acc_t>(bias_vector<acc_t, scalar_t>(bias, round_up(n, nr))), n, k, kh, kw,
                           nr};
  const scalar_t* src = w.const_data_ptr<scalar_t>();
  const int64_t panels = ceil_div(n, nr);
  // Weights that are not pinned (weight_cache.h) are re-packed on every call, so this runs on all threads,
  // one panel (all taps) per item. The transposition goes by blocks of kBlock input channels, so that both its
  // reads and its writes stay in L1.
  constexpr int64_t kBlock = 16;
  at::parallel_for(0, panels, grain_for(taps * k * nr), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t cols = std::min(nr, n - p * nr);
      const scalar_t* panel_src = src + p * nr * k * taps;
      for (int64_t t = 0; t < taps; ++t) {
        acc_t* dst = packed.weight.get() + (t * panels + p) * k * nr;
        for (int64_t k0 = 0; k0 < k; k0 += kBlock) {
          const int64_t k1 = std::min(k, k0 + kBlock);
          for (int64_t j = 0; j < cols; ++j) {
            for (int64_t kk = k0; kk < k1; ++kk) {
              dst[kk * nr + j] = static_cast<acc_t>(panel_src[(j * k + kk) * taps + t]);
            }
          }
          for (int64_t kk = k0; kk < k1; ++kk) {
            std::fill(dst + kk * nr + cols, dst + (kk + 1) * nr, acc_t(0));
          }
        }
      }
    }
  });
  return packed;
}

// The packed (weight, bias): packed once while both are pinned and unchanged (weight_cache.h), else now.
template <typename acc_t, typename scalar_t>
PackedConv<acc_t> pack_conv(const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t nr) {
  // The packed form depends on the panel width and the accumulator type (the weight's dtype is its own).
  const int64_t layout = nr * 16 + static_cast<int64_t>(sizeof(acc_t));
  const std::shared_ptr<const void> packed = cached_packing(weight, bias, layout, [&] {
    return std::static_pointer_cast<const void>(
        std::make_shared<const PackedConv<acc_t>>(pack_conv_now<acc_t, scalar_t>(weight, bias, nr)));
  });
  return *static_cast<const PackedConv<acc_t>*>(packed.get());
}

// A band of image rows in acc_t with zero padding around it, so that convolution taps need no bounds checks.
// Plane row r holds image row row0 + r (zeros where that lies outside the image). Pixel (r, c), c in
// [-pad, width + pad), is at data + (r * wp + pad + c) * ld with wp = width + pad: the right padding of a
// row is the left padding of the next one, and `pad` more pixels close the last row.
template <typename T>
struct Plane {
  T* data;
  int64_t rows, width, pad, ld, row0;

  static int64_t elements(int64_t rows, int64_t width, int64_t pad, int64_t ld) {
    return (rows * (width + pad) + pad) * ld;
  }

  int64_t wp() const { return width + pad; }
  T* pixel(int64_t r, int64_t c) const { return data + (r * wp() + pad + c) * ld; }

  // Zeroes the padding columns and the rows outside the image [0, height); the rest is left as written.
  void zero_padding(int64_t height) const {
    for (int64_t r = 0; r <= rows; ++r) {
      std::fill_n(data + r * wp() * ld, pad * ld, T(0));
    }
    for (int64_t r = 0; r < rows; ++r) {
      if (row0 + r < 0 || row0 + r >= height) {
        std::fill_n(pixel(r, 0), width * ld, T(0));
      }
    }
  }

  // Fills the plane from one channels_last image [height, width, ld] (ld == its channel count).
  template <typename scalar_t>
  void fill(const scalar_t* image, int64_t height) const {
    zero_padding(height);
    const int64_t begin = std::clamp<int64_t>(-row0, 0, rows), end = std::clamp<int64_t>(height - row0, 0, rows);
    at::parallel_for(begin, end, grain_for(width * ld), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* src = image + (row0 + r) * width * ld;
        T* dst = pixel(r, 0);
        for (int64_t i = 0; i < width * ld; ++i) {
          dst[i] = static_cast<T>(src[i]);
        }
      }
    });
  }
};

// [C, 1, kh, kw] -> [kh * kw][C] in acc_t: one contiguous row of channel weights per tap.
template <typename acc_t, typename scalar_t>
Scratch<acc_t> depthwise_weight(const at::Tensor& weight) {
  const at::Tensor w = weight.contiguous();
  const int64_t channels = w.size(0), taps = w.size(2) * w.size(3);
  Scratch<acc_t> out(taps * channels);
  const scalar_t* src = w.const_data_ptr<scalar_t>();
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t t = 0; t < taps; ++t) {
      out.get()[t * channels + c] = static_cast<acc_t>(src[c * taps + t]);
    }
  }
  return out;
}

// Element offsets of the taps of a depthwise window in a plane of row pitch `wp` pixels and `ld` elements
// per pixel.
inline std::vector<int64_t> depthwise_taps(int64_t kh, int64_t kw, int64_t dh, int64_t dw, int64_t wp, int64_t ld) {
  std::vector<int64_t> taps;
  taps.reserve(kh * kw);
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) {
      taps.push_back((i * dh * wp + j * dw) * ld);
    }
  }
  return taps;
}

// mk.gemm with its workspace, split over the threads by panels of output channels (by rows when there are
// fewer panels than threads); inline inside a task that already has its own thread.
template <typename T>
void gemm(const MicroKernels<T>& mk, const GemmArgs<T>& g) {
  const auto run = [&](GemmArgs<T> part) {
    const Scratch<T> workspace(mk.gemm_workspace);
    part.workspace = workspace.get();
    mk.gemm(part);
  };
  const int64_t panels = ceil_div(g.n, mk.nr);
  if (panels >= at::get_num_threads()) {
    at::parallel_for(0, panels, grain_for(g.m * g.k * mk.nr), [&](int64_t p0, int64_t p1) {
      GemmArgs<T> part = g;
      part.n = std::min(g.n, p1 * mk.nr) - p0 * mk.nr;
      part.b = g.b + p0 * mk.nr * g.k;
      part.c = g.c + p0 * mk.nr;
      part.bias = g.bias != nullptr ? g.bias + p0 * mk.nr : nullptr;
      run(part);
    });
  } else {
    // Blocks of rows that are whole register tiles.
    constexpr int64_t rows_per_block = 24;
    at::parallel_for(0, ceil_div(g.m, rows_per_block), grain_for(rows_per_block * g.k * g.n),
                     [&](int64_t b0, int64_t b1) {
                       GemmArgs<T> part = g;
                       part.row0 = g.row0 + b0 * rows_per_block;
                       part.m = std::min(g.m, b1 * rows_per_block) - b0 * rows_per_block;
                       run(part);
                     });
  }
}

// mk.depthwise, split over the threads by output rows; inline inside a task that has its own thread.
template <typename T>
void depthwise(const MicroKernels<T>& mk, const DepthwiseArgs<T>& d) {
  at::parallel_for(0, d.rows, grain_for(d.cols * d.channels * d.ntaps), [&](int64_t r0, int64_t r1) {
    DepthwiseArgs<T> part = d;
    part.rows = r1 - r0;
    part.in = d.in + r0 * d.in_row_step;
    part.out = d.out + r0 * d.cols * d.out_ld;
    mk.depthwise(part);
  });
}

// Stride-1 convolution, "same" padding along W (odd kw), as one GEMM per tap:
// C[r, c, :] = sum_{i, j} plane[first_row + r + i, c + j - kw / 2, :] * W[:, :, i, j] for the out_rows x width
// output pixels; with `fuse_epilogue`, C = act(C + bias) (else bias and act are left to the caller).
// first_row is the plane row that kernel row 0 reads for output row 0. Output row r starts at
// c + r * c_row_step, its pixels ldc apart.
template <typename T>
void conv_over_plane(const MicroKernels<T>& mk, const Plane<T>& plane, int64_t first_row, int64_t out_rows,
                     const PackedConv<T>& w, T* c, int64_t ldc, int64_t c_row_step, bool fuse_epilogue = false,
                     Activation act = Activation::None) {
  for (int64_t i = 0; i < w.kh; ++i) {
    for (int64_t j = 0; j < w.kw; ++j) {
      const int64_t t = i * w.kw + j;
      gemm(mk, GemmArgs<T>{.m = out_rows * plane.width,
                           .n = w.n,
                           .k = w.k,
                           .a = plane.pixel(first_row + i, j - same_padding(w.kw)),
                           .lda = plane.ld,
                           .b = w.tap(t),
                           .c = c,
                           .ldc = ldc,
                           .accumulate = t > 0,
                           .bias = fuse_epilogue && t + 1 == w.kh * w.kw ? w.bias.get() : nullptr,
                           .act = act,
                           .group = plane.width,
                           .a_group_step = plane.wp() * plane.ld,
                           .c_group_step = c_row_step});
    }
  }
}

// y[r, ch] = act(c[r, ch] + bias[ch] (+ residual[r, ch])) for `rows` pixels of `channels`, rounded once to
// out_t. The residual (scalar_t, may be null) is read in the input dtype.
template <Activation A, bool kResidual, typename out_t, typename acc_t, typename res_t>
void epilogue_rows_impl(int64_t rows, int64_t channels, const acc_t* c, int64_t ldc, const acc_t* bias,
                        const res_t* residual, int64_t ldr, out_t* y, int64_t ldy) {
  at::parallel_for(0, rows, grain_for(channels), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const acc_t* cr = c + r * ldc;
      out_t* yr = y + r * ldy;
      if constexpr (kResidual) {
        const res_t* rr = residual + r * ldr;
        for (int64_t ch = 0; ch < channels; ++ch) {
          yr[ch] = static_cast<out_t>(epilogue<A>(cr[ch], bias[ch], static_cast<acc_t>(rr[ch])));
        }
      } else {
        for (int64_t ch = 0; ch < channels; ++ch) {
          yr[ch] = static_cast<out_t>(epilogue<A>(cr[ch], bias[ch], acc_t(0)));
        }
      }
    }
  });
}

template <typename out_t, typename acc_t, typename res_t = out_t>
void epilogue_rows(Activation act, int64_t rows, int64_t channels, const acc_t* c, int64_t ldc, const acc_t* bias,
                   out_t* y, int64_t ldy, const res_t* residual = nullptr, int64_t ldr = 0) {
  const auto run = [&](auto a) {
    constexpr Activation A = decltype(a)::value;
    if (residual != nullptr) {
      epilogue_rows_impl<A, true>(rows, channels, c, ldc, bias, residual, ldr, y, ldy);
    } else {
      epilogue_rows_impl<A, false>(rows, channels, c, ldc, bias, residual, ldr, y, ldy);
    }
  };
  switch (act) {
    case Activation::Relu:
      run(std::integral_constant<Activation, Activation::Relu>{});
      break;
    case Activation::Relu6:
      run(std::integral_constant<Activation, Activation::Relu6>{});
      break;
    default:
      run(std::integral_constant<Activation, Activation::None>{});
      break;
  }
}

// Output rows per band: bands of about equal size whose working set (bytes_per_row each) stays within
// `budget` bytes. The halo rows a band needs are re-read (or recomputed) per band, so bands are as large as the
// budget allows; parallelism comes from run_tasks.
inline int64_t choose_band(int64_t out_rows, int64_t bytes_per_row, int64_t budget = kTileBytes) {
  const int64_t max_rows = std::clamp<int64_t>(budget / std::max<int64_t>(1, bytes_per_row), 1, out_rows);
  return ceil_div(out_rows, ceil_div(out_rows, max_rows));
}

// The band (at most `band` rows, from choose_band) that spreads `images` images evenly over the threads when
// each band recomputes a halo: bands are split further until every thread gets a whole number of them, so
// that no thread waits on another with one band more, at the cost of a halo per extra band. Few bands per
// thread only: with many, the imbalance is small and the halos are not worth it. Rows are never split below
// `min_rows` per band (the caller's floor for a band worth its halo).
inline int64_t balance_band(int64_t images, int64_t out_rows, int64_t band, int64_t min_rows) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t bands = ceil_div(out_rows, band);
  const int64_t tasks = images * bands;
  if (tasks < threads || tasks >= 4 * threads || tasks % threads == 0) {
    return band;
  }
  for (int64_t b = bands + 1; b <= out_rows / std::max<int64_t>(1, min_rows); ++b) {
    if ((images * b) % threads == 0) {
      return ceil_div(out_rows, b);
    }
  }
  return band;
}

// Runs task(scratch, i) for i in [0, tasks), each thread building its scratch once with make_scratch().
// When the tasks spread evenly over the threads (>= 80% busy), each task runs on one thread. Otherwise (few
// tasks: batch 1, a small image) they run one after the other on the calling thread and the work inside
// each one spreads over the threads instead: gemm, depthwise, epilogue_rows and Plane::fill split their
// loops with at::parallel_for, which runs inline when called from a task already on its own thread.
template <typename MakeScratch, typename Task>
void run_tasks(int64_t tasks, const MakeScratch& make_scratch, const Task& task) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const bool one_thread_per_task = tasks >= threads && 5 * tasks >= 4 * threads * ceil_div(tasks, threads);
  if (one_thread_per_task) {
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      auto scratch = make_scratch();
      for (int64_t i = begin; i < end; ++i) {
        task(scratch, i);
      }
    });
  } else {
    auto scratch = make_scratch();
    for (int64_t i = 0; i < tasks; ++i) {
      task(scratch, i);
    }
  }
}

// run_tasks over the bands of `band` output rows of every image: task(scratch, image, first_row, rows).
template <typename MakeScratch, typename Task>
void for_each_band(int64_t images, int64_t out_rows, int64_t band, const MakeScratch& make_scratch,
                   const Task& task) {
  const int64_t bands = ceil_div(out_rows, band);
  run_tasks(images * bands, make_scratch, [&](auto& scratch, int64_t i) {
    const int64_t first = (i % bands) * band;
    task(scratch, i / bands, first, std::min(band, out_rows - first));
  });
}

}  // namespace fastconv::cpu

// The CPU micro-kernels, written once with GCC/Clang vector types and compiled once per instruction set:
// a translation unit defines FASTCONV_ISA (the namespace) and FASTCONV_VECTOR_BYTES (16 for SSE2/NEON,
// 32 for AVX2), sets the target, then includes this file. Everything but the table getters has internal
// linkage, so code built for AVX2 can never be picked by the linker for a caller on a CPU without it.
#pragma once

#include <cstdint>

#include "microkernels.h"

#if !defined(FASTCONV_ISA) || !defined(FASTCONV_VECTOR_BYTES)
#error "define FASTCONV_ISA and FASTCONV_VECTOR_BYTES before including microkernels_impl.h"
#endif

namespace fastconv::cpu::FASTCONV_ISA {
namespace {

template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(FASTCONV_VECTOR_BYTES)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

template <typename T>
constexpr int64_t kLanes = FASTCONV_VECTOR_BYTES / sizeof(T);

// Register tile of the GEMM: kMr rows of A times two vectors of B (kNr = 2 * lanes columns). 6 x 2
// accumulators, 2 B vectors and 1 broadcast fill the 16 vector registers of SSE2 and AVX2.
constexpr int64_t kMr = 6;
template <typename T>
constexpr int64_t kNr = 2 * kLanes<T>;

// Cache blocking: a kc x nr panel of B (16 KB with AVX2) stays in L1 while an mc x kc block of A (120 KB)
// stays in L2.
template <typename T>
constexpr int64_t kKc = 1024 / sizeof(T);
constexpr int64_t kMc = 20 * kMr;

// Packing A costs about as much as one pass of register tiles over it; it pays when the packed block serves
// at least this many panels of B (measured with AVX2: reading A in place is faster below 128 output channels).
constexpr int64_t kPackPanels = 8;

// Channels of a depthwise register tile: 4 vectors of accumulators.
constexpr int kDepthwiseVectors = 4;

// Unaligned vector load and store (packed panels are aligned, rows of A and tiles are not always).
template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store(T* p, Vec<T> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// common/activation.h's activations for vectors and scalars alike. Written here rather than instantiated from
// that header so that no function compiled for this instruction set is shared with other translation units.
template <typename V>
inline V apply_activation(V v, Activation act) {
  const V zero = V{} - V{};
  if (act == Activation::Relu) {
    return v < zero ? zero : v;
  }
  if (act == Activation::Relu6) {
    const V six = zero + 6;
    v = v < zero ? zero : v;
    return v > six ? six : v;
  }
  return v;
}

// How a register tile leaves: added to C (accumulate), then, with a bias, through bias and activation.
template <typename T>
struct TileStore {
  bool accumulate;
  const T* bias;  // the panel's nr entries, or null
  Activation act;
};

inline int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// Offset of row i of a GemmArgs matrix whose rows are `ld` apart within a group, `group_step` between groups.
template <typename T>
inline int64_t row_offset(const GemmArgs<T>& g, int64_t i, int64_t ld, int64_t group_step) {
  const int64_t r = g.row0 + i;
  return g.group > 0 ? (r / g.group) * group_step + (r % g.group) * ld : r * ld;
}

// C[mr, nr] (+)= A[mr, kc] * B[kc, nr] with the whole C tile in registers, one broadcast of A per row and k.
// Row i of A is a[i], its k-th element at a[i][k * KS]: KS = kMr when A comes packed by pack_a ([kc][kMr]),
// 1 when it is read in place. B is a [kc][nr] panel, C given by row pointers.
template <typename T, int MR, int64_t KS>
void gemm_tile(int64_t kc, const T* const* a, const T* b, T* const* c, const TileStore<T>& out) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc0[MR];
  Vec<T> acc1[MR];
  const T* ap[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    acc0[i] = Vec<T>{};
    acc1[i] = Vec<T>{};
    ap[i] = a[i];
  }
  for (int64_t k = 0; k < kc; ++k) {
    const Vec<T> b0 = load(b + k * 2 * L);
    const Vec<T> b1 = load(b + k * 2 * L + L);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const T ai = ap[i][k * KS];
      acc0[i] += b0 * ai;
      acc1[i] += b1 * ai;
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (out.accumulate) {
      acc0[i] += load(c[i]);
      acc1[i] += load(c[i] + L);
    }
    if (out.bias != nullptr) {
      acc0[i] = apply_activation(acc0[i] + load(out.bias), out.act);
      acc1[i] = apply_activation(acc1[i] + load(out.bias + L), out.act);
    }
    store(c[i], acc0[i]);
    store(c[i] + L, acc1[i]);
  }
}

template <typename T, int64_t KS>
void gemm_tile_rows(int64_t mr, int64_t kc, const T* const* a, const T* b, T* const* c, const TileStore<T>& out) {
  switch (mr) {
    case 6:
      gemm_tile<T, 6, KS>(kc, a, b, c, out);
      break;
    case 5:
      gemm_tile<T, 5, KS>(kc, a, b, c, out);
      break;
    case 4:
      gemm_tile<T, 4, KS>(kc, a, b, c, out);
      break;
    case 3:
      gemm_tile<T, 3, KS>(kc, a, b, c, out);
      break;
    case 2:
      gemm_tile<T, 2, KS>(kc, a, b, c, out);
      break;
    default:
      gemm_tile<T, 1, KS>(kc, a, b, c, out);
      break;
  }
}

// Element offsets of rows [m0, m0 + rows) of A and of C (row_offset), worked out once per block of rows
// rather than once per register tile and panel (row_offset divides).
struct RowOffsets {
  int64_t a[kMc], c[kMc];
};

template <typename T>
void row_offsets(const GemmArgs<T>& g, int64_t m0, int64_t rows, RowOffsets& off) {
  for (int64_t i = 0; i < rows; ++i) {
    off.a[i] = row_offset(g, m0 + i, g.lda, g.a_group_step);
    off.c[i] = row_offset(g, m0 + i, g.ldc, g.c_group_step);
  }
}

// Rows [0, rows) of a block (offsets `off`) x columns [k0, k0 + kc) of A -> ceil(rows / kMr) panels of
// [kc][kMr]; rows past the end are not read.
template <typename T>
void pack_a(const GemmArgs<T>& g, const RowOffsets& off, int64_t rows, int64_t k0, int64_t kc, T* packed) {
  for (int64_t i0 = 0; i0 < rows; i0 += kMr) {
    const int64_t mr = min64(kMr, rows - i0);
    T* panel = packed + i0 * kc;
    for (int64_t i = 0; i < mr; ++i) {
      const T* row = g.a + off.a[i0 + i] + k0;
      for (int64_t k = 0; k < kc; ++k) {
        panel[k * kMr + i] = row[k];
      }
    }
  }
}

// One k block [k0, k0 + kc) of the rows of a block (offsets `off`) for panel p: register tiles of kMr rows,
// then the remainder. A is read from `packed` (pack_a) or, when that is null, in place.
template <typename T>
void gemm_rows(const GemmArgs<T>& g, const RowOffsets& off, int64_t rows, int64_t k0, int64_t kc,
               const T* packed, const T* b, int64_t p, const TileStore<T>& out) {
  const T* a[kMr];
  T* c[kMr];
  for (int64_t i = 0; i < rows; i += kMr) {
    const int64_t mr = min64(kMr, rows - i);
    for (int64_t u = 0; u < mr; ++u) {
      a[u] = packed ? packed + i * kc + u : g.a + off.a[i + u] + k0;
      c[u] = g.c + off.c[i + u] + p * kNr<T>;
    }
    if (packed) {
      gemm_tile_rows<T, kMr>(mr, kc, a, b, c, out);
    } else {
      gemm_tile_rows<T, 1>(mr, kc, a, b, c, out);
    }
  }
}

template <typename T>
void gemm(const GemmArgs<T>& g) {
  constexpr int64_t NR = kNr<T>;
  const int64_t panels = (g.n + NR - 1) / NR;
  if (g.k == 0) {
    for (int64_t i = 0; i < g.m; ++i) {
      T* c = g.c + row_offset(g, i, g.ldc, g.c_group_step);
      for (int64_t j = 0; j < panels * NR; ++j) {
        const T v = g.accumulate ? c[j] : T(0);
        c[j] = g.bias != nullptr ? apply_activation(v + g.bias[j], g.act) : v;
      }
    }
    return;
  }
  const bool pack = panels >= kPackPanels;
  T* packed_a = g.workspace;
  // Equal k blocks, so that no block is a short remainder.
  const int64_t kblocks = (g.k + kKc<T> - 1) / kKc<T>;
  const int64_t kc_max = (g.k + kblocks - 1) / kblocks;
  for (int64_t k0 = 0; k0 < g.k; k0 += kc_max) {
    const int64_t kc = min64(kc_max, g.k - k0);
    const bool accumulate = g.accumulate || k0 > 0;
    const bool last = k0 + kc == g.k;
    for (int64_t m0 = 0; m0 < g.m; m0 += kMc) {
      const int64_t mc = min64(kMc, g.m - m0);
      RowOffsets off;
      row_offsets(g, m0, mc, off);
      if (pack) {
        pack_a(g, off, mc, k0, kc, packed_a);
      }
      for (int64_t p = 0; p < panels; ++p) {
        const TileStore<T> out{accumulate, last && g.bias != nullptr ? g.bias + p * NR : nullptr, g.act};
        gemm_rows(g, off, mc, k0, kc, pack ? packed_a : nullptr, g.b + (p * g.k + k0) * NR, p, out);
      }
    }
  }
}

// One output pixel, V vectors of channels: the sum over taps of input times weight, in registers, then bias
// and activation.
template <typename T, int V>
inline void depthwise_vectors(const DepthwiseArgs<T>& d, const T* in, int64_t ch, T* out) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    acc[v] = Vec<T>{};
  }
  for (int64_t t = 0; t < d.ntaps; ++t) {
    const T* p = in + d.taps[t] + ch;
    const T* w = d.weight + t * d.channels + ch;
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      acc[v] += load(p + v * L) * load(w + v * L);
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    store(out + ch + v * L, apply_activation(acc[v] + load(d.bias + ch + v * L), d.act));
  }
}

// Output pixels [.., ..) x channels [ch_begin, channels) one pixel at a time: register tiles of
// kDepthwiseVectors vectors, then single vectors, then scalars.
template <typename T>
void depthwise_pixels(const DepthwiseArgs<T>& d, int64_t ch_begin) {
  constexpr int64_t L = kLanes<T>;
  constexpr int64_t block = kDepthwiseVectors * L;
  for (int64_t r = 0; r < d.rows; ++r) {
    for (int64_t q = 0; q < d.cols; ++q) {
      const T* in = d.in + r * d.in_row_step + q * d.in_col_step;
      T* out = d.out + (r * d.cols + q) * d.out_ld;
      int64_t ch = ch_begin;
      for (; ch + block <= d.channels; ch += block) {
        depthwise_vectors<T, kDepthwiseVectors>(d, in, ch, out);
      }
      for (; ch + L <= d.channels; ch += L) {
        depthwise_vectors<T, 1>(d, in, ch, out);
      }
      for (; ch < d.channels; ++ch) {
        T acc = T(0);
        for (int64_t t = 0; t < d.ntaps; ++t) {
          acc += in[d.taps[t] + ch] * d.weight[t * d.channels + ch];
        }
        out[ch] = apply_activation(acc + d.bias[ch], d.act);
      }
    }
  }
}

// Output pixels along a row swept at once by depthwise_resident.
constexpr int kDepthwiseSweep = 4;

// Channels [0, channels_vec) (whole vectors) with NTAPS taps, one output row and channel vector at a time: its
// NTAPS weight vectors stay in registers while the row's pixels are swept kDepthwiseSweep at a time, so that
// each multiply-add loads one input vector (depthwise_pixels loads a weight vector beside each).
template <typename T, int NTAPS>
void depthwise_resident(const DepthwiseArgs<T>& d, int64_t channels_vec) {
  constexpr int64_t L = kLanes<T>;
  constexpr int Q = kDepthwiseSweep;
  int64_t taps[NTAPS];
  for (int t = 0; t < NTAPS; ++t) {
    taps[t] = d.taps[t];
  }
  // Rows outermost: the input rows one output row reads stay in L1 while the channel vectors sweep them, so
  // that the cache lines the first vector of a pair brings in serve the second.
  for (int64_t r = 0; r < d.rows; ++r) {
    for (int64_t ch = 0; ch < channels_vec; ch += L) {
      Vec<T> w[NTAPS];
#pragma GCC unroll 32
      for (int t = 0; t < NTAPS; ++t) {
        w[t] = load(d.weight + t * d.channels + ch);
      }
      const T* in = d.in + r * d.in_row_step + ch;
      T* out = d.out + r * d.cols * d.out_ld + ch;
      int64_t q = 0;
      for (; q + Q <= d.cols; q += Q) {
        Vec<T> acc[Q];
#pragma GCC unroll 8
        for (int j = 0; j < Q; ++j) {
          acc[j] = Vec<T>{};
        }
#pragma GCC unroll 32
        for (int t = 0; t < NTAPS; ++t) {
#pragma GCC unroll 8
          for (int j = 0; j < Q; ++j) {
            acc[j] += load(in + (q + j) * d.in_col_step + taps[t]) * w[t];
          }
        }
#pragma GCC unroll 8
        for (int j = 0; j < Q; ++j) {
          store(out + (q + j) * d.out_ld, apply_activation(acc[j] + load(d.bias + ch), d.act));
        }
      }
      for (; q < d.cols; ++q) {
        Vec<T> acc = Vec<T>{};
#pragma GCC unroll 32
        for (int t = 0; t < NTAPS; ++t) {
          acc += load(in + q * d.in_col_step + taps[t]) * w[t];
        }
        store(out + q * d.out_ld, apply_activation(acc + load(d.bias + ch), d.act));
      }
    }
  }
}

template <typename T>
void depthwise(const DepthwiseArgs<T>& d) {
  constexpr int64_t L = kLanes<T>;
  const int64_t channels_vec = d.channels - d.channels % L;
  if (d.ntaps == 9 && channels_vec > 0) {  // 3x3, every depthwise conv of MobileNetV2
    depthwise_resident<T, 9>(d, channels_vec);
    if (channels_vec < d.channels) {
      depthwise_pixels(d, channels_vec);
    }
    return;
  }
  depthwise_pixels(d, 0);
}

#define FASTCONV_STRINGIFY_(x) #x
#define FASTCONV_STRINGIFY(x) FASTCONV_STRINGIFY_(x)

template <typename T>
MicroKernels<T> make_microkernels() {
  return {FASTCONV_STRINGIFY(FASTCONV_ISA), kNr<T>, kMc * kKc<T>, &gemm<T>, &depthwise<T>};
}

}  // namespace

MicroKernels<float> microkernels_f32() { return make_microkernels<float>(); }
MicroKernels<double> microkernels_f64() { return make_microkernels<double>(); }

}  // namespace fastconv::cpu::FASTCONV_ISA

// Tile geometry and per-(block, thread) phases of the CUDA kernels asymmetric_conv_pair and
// asymmetric_conv_parallel (csrc/cuda/asymmetric_conv_*.cu), written once for the device and for the CPU
// emulator (csrc/cpu/asymmetric_conv_cuda_tiles.cpp), which runs them over every block and thread index.
//
// A block's work is implicit GEMMs over shared-memory tiles of NHWC pixels. A staged tile is stored row by row
// with the row stride of the tile it lives in (`row_stride` pixels), and the GEMM's rows are "virtual pixels"
// p = row * row_stride + col of that same stride: tap (r, s) then reads row p + r * row_stride + s of the
// staged tile, one shift for all rows, so every tap is a plain matrix product over shifted rows. The virtual
// pixels of the columns past the output tile compute values nobody stores; they cost (row_stride - tile_w) /
// row_stride of the work and buy shift-only addressing. GEMM rows come in runs of 16 (tensor-core fragments);
// each staged array has enough rows that the last run plus the largest shift stays inside it.
//
// Shared-memory arrays, per path (TileTraits):
//   x_s    [x_rows][kLdK]                   T    one K chunk of input channels of the input tile (halo included)
//   w_s    [kGroups][taps_max][kGroupN][kLdK] T  that chunk of the weights of 2 groups of 32 output channels
//   c_s    [gemm rows][kLdC]                acc  the finished accumulators, aliasing x_s and w_s
//   mid_s  [mid_rows][mid_ld]               T    pair only: conv1's activated output on the intermediate tile
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "activation.h"
#include "conv_geometry.h"
#include "macros.h"
#include "op_args.h"

namespace fastconv::asym {

// Output channels of one group: a warp's share of a GEMM's columns. A block's GEMM has two groups: two slices
// of one conv (pair), or a slice of conv_a and one of conv_b (parallel).
inline constexpr int kGroupN = 32;
inline constexpr int kGroups = 2;
inline constexpr int kTileN = kGroups * kGroupN;
// c_s row length: a multiple of 4 floats (WMMA stores), and rows not 32 words apart (bank conflicts).
inline constexpr int kLdC = kTileN + 4;
// GEMM rows are computed in runs of one tensor-core fragment.
inline constexpr int kRowRun = 16;
// Dynamic shared memory of one block on sm_90 (H100/H200).
inline constexpr int64_t kSmemBudget = 227 * 1024;
// Streaming multiprocessors of an H100 SXM/H200: what the emulator plans for, so that it picks the launch
// geometry the CUDA kernels pick on such a GPU.
inline constexpr int kHopperSmCount = 132;

// Per-dtype shape of the staged arrays. fp16/bf16 run on tensor cores: K chunks of 32 channels, rows of 48
// elements (96 bytes: every row starts 32-byte aligned, as WMMA loads require, and 8 consecutive rows spread
// over the banks). fp32/fp64 run on CUDA cores: K chunks of 16, rows of 17 (consecutive rows in distinct banks).
// kMaxRows: GEMM rows a block's accumulators hold (tensor cores: 8 warps of 4 x 2 fragments; CUDA cores:
// 256 threads of 8 rows x 4 columns).
template <typename T>
struct TileTraits {
  static constexpr bool kTensorCores = std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>;
  static constexpr int kThreads = 256;
  static constexpr int kChunkK = kTensorCores ? 32 : 16;
  static constexpr int kLdK = kTensorCores ? 48 : 17;
  static constexpr int kMaxRows = kTensorCores ? 256 : 128;
  // Elements per 16-byte input load (16-bit dtypes, when the channels allow it).
  static constexpr int kVec = kTensorCores ? 8 : 1;
  using Acc = at::opmath_type<T>;
};

// One conv of a block's GEMM, as the tap loop reads it: its kernel, and where its window starts inside the
// staged tile (the parallel op stages the larger halo of its two convs; each conv skips what it does not read).
struct TapConv {
  int kh, kw;
  int row_off, col_off;
};

// The staged input tile of an output tile at (oh0, ow0): in_h x in_w pixels from (oh0 + origin_h, ow0 +
// origin_w) (origin < 0: the halo), stored as x_rows rows of x_s, those past in_h * in_w zero.
struct InputTile {
  int origin_h, origin_w;
  int in_h, in_w;
  int x_rows;
};

// Launch geometry of asymmetric_conv_pair. Grid: (tiles, slices, batch).
struct PairPlan {
  int h, w;                 // image; x [N, H, W, cin], y [N, H, W, cout] in memory
  int cin, cmid, cout;      // weight1 [cmid, cin, kh1, kw1], weight2 [cout, cmid, kh2, kw2]
  int kmid;                 // cmid rounded up to the K chunk: the intermediate's columns conv2 reads
  int tile_h, tile_w, tiles_w, tiles;  // output tile; tiles along W and per image
  InputTile in;             // conv1's input: the intermediate tile plus conv1's halo
  int mid_h, mid_w;         // intermediate tile: the output tile plus conv2's halo
  int mid_origin_h, mid_origin_w;  // its first pixel, relative to the output tile's
  int mid_rows, mid_ld;     // mid_s [mid_rows][mid_ld]
  int rows1, rows2;         // GEMM rows of conv1 (row stride in_w) and conv2 (row stride mid_w), runs of 16
  TapConv conv1, conv2;
  int taps_max;             // w_s sized for the larger kernel
  int slice_channels, slices;  // output channels per block (a multiple of kTileN), blocks along channels
  int w_offset, mid_offset, smem_bytes;  // byte offsets of w_s and mid_s in shared memory; its size
  Activation act;
};

// Launch geometry of asymmetric_conv_parallel. Grid: (tiles, slices, batch); block (tile, s) computes output
// channels [32 s, 32 s + 32) of conv_a and of conv_b.
struct ParallelPlan {
  int h, w;
  int cin, cout_a, cout_b;  // weight_a [cout_a, cin, kh, kw], weight_b [cout_b, cin, kh, kw]; y [.., cout_a + cout_b]
  int tile_h, tile_w, tiles_w, tiles;
  InputTile in;
  int rows;                 // GEMM rows (row stride in_w), runs of 16
  TapConv conv_a, conv_b;
  int taps_max, slices;
  int w_offset, smem_bytes;
  Activation act;
};

// ---------------------------------------------------------------------------------------------------------
// Planning (host).

inline int64_t align_smem(int64_t bytes) { return round_up(bytes, 128); }

// Rows of a staged array (rows `row_stride` pixels wide) that GEMM rows [0, rows) read through taps reaching
// kh_reach rows and kw_reach columns.
inline int64_t staged_rows(int64_t rows, int64_t row_stride, int64_t kh_reach, int64_t kw_reach) {
  return rows + (kh_reach - 1) * row_stride + (kw_reach - 1);
}

// Bytes of x_s + w_s, or of c_s where it is larger (it aliases them).
template <typename T>
int64_t staging_bytes(int64_t x_rows, int64_t taps_max, int64_t gemm_rows) {
  using TT = TileTraits<T>;
  const int64_t staged = align_smem(x_rows * TT::kLdK * static_cast<int64_t>(sizeof(T))) +
                         kGroups * taps_max * kGroupN * TT::kLdK * static_cast<int64_t>(sizeof(T));
  const int64_t acc = gemm_rows * kLdC * static_cast<int64_t>(sizeof(typename TT::Acc));
  return align_smem(std::max(staged, acc));
}

// The tile extent that covers `size` with the fewest tiles of at most `max_tile` positions, evened out.
inline int64_t balanced_tile(int64_t size, int64_t max_tile) { return ceil_div(size, ceil_div(size, max_tile)); }

// Searches the output tiles (tile_h x tile_w, balanced over the image) for the one with the least MMA work over
// the whole image, `cost(tile_h, tile_w)` giving a block's work or -1 when the tile does not fit.
template <typename Cost>
std::pair<int64_t, int64_t> choose_tile(int64_t h, int64_t w, int64_t max_rows, Cost cost) {
  int64_t best_h = 0, best_w = 0;
  double best = 0;
  for (int64_t tw = std::min(w, max_rows); tw >= 1; --tw) {
    if (balanced_tile(w, tw) != tw) {
      continue;
    }
    int64_t th_max = 0;
    for (int64_t th = 1; th <= h && th * tw <= max_rows && cost(th, tw) >= 0; ++th) {
      th_max = th;
    }
    if (th_max == 0) {
      continue;
    }
    const int64_t th = balanced_tile(h, th_max);
    const double total = static_cast<double>(cost(th, tw)) * ceil_div(h, th) * ceil_div(w, tw);
    if (best_h == 0 || total < best) {
      best = total, best_h = th, best_w = tw;
    }
  }
  return {best_h, best_w};
}

inline int checked_int(const char* op, int64_t v, const char* what) {
  TORCH_CHECK_VALUE(v <= INT32_MAX, "fastconv_C::", op, ": ", what, " must fit in 32 bits; got ", v);
  return static_cast<int>(v);
}

inline TapConv tap_conv(const SameConvGeometry& c, int64_t halo_h, int64_t halo_w) {
  return {static_cast<int>(c.kh), static_cast<int>(c.kw), static_cast<int>(halo_h - c.kh / 2),
          static_cast<int>(halo_w - c.kw / 2)};
}

// The tile, intermediate and shared-memory layout of asymmetric_conv_pair for dtype T; `sm_count` decides how
// many blocks share a tile's output channels (each recomputes conv1) when there are too few tiles to fill the GPU.
template <typename T>
PairPlan plan_pair(const char* op, const AsymmetricPairGeometry& g, int sm_count) {
  using TT = TileTraits<T>;
  const SameConvGeometry& c1 = g.first;
  const SameConvGeometry& c2 = g.second;
  const int64_t kmid = round_up(c1.cout, TT::kChunkK);
  // Tensor cores: rows 32-byte aligned, an odd number of 32-byte units apart; CUDA cores: an odd row length.
  const int64_t mid_ld = TT::kTensorCores ? kmid + 16 : kmid + 1;
  const int64_t taps_max = std::max(c1.kh * c1.kw, c2.kh * c2.kw);
  struct Layout {
    int64_t mid_h, mid_w, in_w, rows1, rows2, x_rows, mid_rows, staging, smem;
  };
  auto layout = [&](int64_t th, int64_t tw) {
    Layout l{};
    l.mid_h = th + c2.kh - 1, l.mid_w = tw + c2.kw - 1;
    l.in_w = l.mid_w + c1.kw - 1;
    l.rows1 = round_up(l.mid_h * l.in_w, kRowRun), l.rows2 = round_up(th * l.mid_w, kRowRun);
    l.x_rows = staged_rows(l.rows1, l.in_w, c1.kh, c1.kw);
    l.mid_rows = staged_rows(l.rows2, l.mid_w, c2.kh, c2.kw);
    l.staging = staging_bytes<T>(l.x_rows, taps_max, std::max(l.rows1, l.rows2));
    l.smem = l.staging + l.mid_rows * mid_ld * static_cast<int64_t>(sizeof(T));
    return l;
  };
  const auto [th, tw] = choose_tile(g.h, g.w, TT::kMaxRows, [&](int64_t th, int64_t tw) -> int64_t {
    const Layout l = layout(th, tw);
    if (l.rows1 > TT::kMaxRows || l.rows2 > TT::kMaxRows || l.smem > kSmemBudget) {
      return -1;
    }
    return l.rows1 * c1.cin * c1.kh * c1.kw * kmid + l.rows2 * kmid * c2.kh * c2.kw * c2.cout;
  });
  TORCH_CHECK_VALUE(th > 0, "fastconv_C::", op, ": the intermediate of ", c1.cout, " channels (", c1.kh, "x", c1.kw,
                    " then ", c2.kh, "x", c2.kw, ") does not fit in a CUDA block's shared memory for this dtype; ",
                    "use the reference or triton backend");
  const Layout l = layout(th, tw);
  PairPlan p{};
  p.h = checked_int(op, g.h, "H"), p.w = checked_int(op, g.w, "W");
  p.cin = checked_int(op, c1.cin, "the input channel count"), p.cmid = checked_int(op, c1.cout, "weight1's size(0)");
  p.cout = checked_int(op, c2.cout, "weight2's size(0)");
  p.kmid = static_cast<int>(kmid);
  p.tile_h = static_cast<int>(th), p.tile_w = static_cast<int>(tw);
  p.tiles_w = checked_int(op, ceil_div(g.w, tw), "the number of tiles along W");
  p.tiles = checked_int(op, ceil_div(g.h, th) * p.tiles_w, "the number of tiles per image");
  p.mid_h = static_cast<int>(l.mid_h), p.mid_w = static_cast<int>(l.mid_w);
  p.mid_origin_h = static_cast<int>(-(c2.kh / 2)), p.mid_origin_w = static_cast<int>(-(c2.kw / 2));
  p.in = {static_cast<int>(p.mid_origin_h - c1.kh / 2), static_cast<int>(p.mid_origin_w - c1.kw / 2),
          static_cast<int>(l.mid_h + c1.kh - 1), static_cast<int>(l.in_w), static_cast<int>(l.x_rows)};
  p.mid_rows = static_cast<int>(l.mid_rows), p.mid_ld = static_cast<int>(mid_ld);
  p.rows1 = static_cast<int>(l.rows1), p.rows2 = static_cast<int>(l.rows2);
  p.conv1 = tap_conv(c1, c1.kh / 2, c1.kw / 2), p.conv2 = tap_conv(c2, c2.kh / 2, c2.kw / 2);
  p.taps_max = static_cast<int>(taps_max);
  const int64_t chunks = ceil_div(c2.cout, kTileN);
  const int64_t blocks = g.n * p.tiles;
  // Split only when the tiles fill less than half the SMs: each split block recomputes the tile's conv1.
  const int64_t per_block = ceil_div(chunks, std::clamp<int64_t>(sm_count / blocks, 1, chunks));
  p.slice_channels = static_cast<int>(per_block * kTileN);
  p.slices = static_cast<int>(ceil_div(chunks, per_block));
  p.w_offset = static_cast<int>(align_smem(l.x_rows * TT::kLdK * static_cast<int64_t>(sizeof(T))));
  p.mid_offset = static_cast<int>(l.staging);
  p.smem_bytes = static_cast<int>(l.smem);
  p.act = g.act;
  return p;
}

// The tile and shared-memory layout of asymmetric_conv_parallel for dtype T: one input tile with the larger
// halo of the two kernels along each axis.
template <typename T>
ParallelPlan plan_parallel(const char* op, const AsymmetricParallelGeometry& g) {
  using TT = TileTraits<T>;
  const int64_t halo_h = std::max(g.a.kh, g.b.kh) / 2, halo_w = std::max(g.a.kw, g.b.kw) / 2;
  const int64_t taps_max = std::max(g.a.kh * g.a.kw, g.b.kh * g.b.kw);
  auto rows_of = [&](int64_t th, int64_t tw) { return round_up(th * (tw + 2 * halo_w), kRowRun); };
  auto x_rows_of = [&](int64_t th, int64_t tw) {
    return staged_rows(rows_of(th, tw), tw + 2 * halo_w, 2 * halo_h + 1, 2 * halo_w + 1);
  };
  const auto [th, tw] = choose_tile(g.h, g.w, TT::kMaxRows, [&](int64_t th, int64_t tw) -> int64_t {
    const int64_t rows = rows_of(th, tw);
    if (rows > TT::kMaxRows || staging_bytes<T>(x_rows_of(th, tw), taps_max, rows) > kSmemBudget) {
      return -1;
    }
    return rows;
  });
  TORCH_CHECK_VALUE(th > 0, "fastconv_C::", op, ": kernels of ", g.a.kh, "x", g.a.kw, " and ", g.b.kh, "x", g.b.kw,
                    " do not fit in a CUDA block's shared memory; use the reference or triton backend");
  ParallelPlan p{};
  p.h = checked_int(op, g.h, "H"), p.w = checked_int(op, g.w, "W");
  p.cin = checked_int(op, g.cin, "the input channel count");
  p.cout_a = checked_int(op, g.a.cout, "weight_a's size(0)"), p.cout_b = checked_int(op, g.b.cout, "weight_b's size(0)");
  checked_int(op, g.a.cout + g.b.cout, "the output channel count");
  p.tile_h = static_cast<int>(th), p.tile_w = static_cast<int>(tw);
  p.tiles_w = checked_int(op, ceil_div(g.w, tw), "the number of tiles along W");
  p.tiles = checked_int(op, ceil_div(g.h, th) * p.tiles_w, "the number of tiles per image");
  p.in = {static_cast<int>(-halo_h), static_cast<int>(-halo_w), static_cast<int>(th + 2 * halo_h),
          static_cast<int>(tw + 2 * halo_w), static_cast<int>(x_rows_of(th, tw))};
  p.rows = static_cast<int>(rows_of(th, tw));
  p.conv_a = tap_conv(g.a, halo_h, halo_w), p.conv_b = tap_conv(g.b, halo_h, halo_w);
  p.taps_max = static_cast<int>(taps_max);
  p.slices = static_cast<int>(ceil_div(std::max(g.a.cout, g.b.cout), kGroupN));
  p.w_offset = static_cast<int>(align_smem(x_rows_of(th, tw) * TT::kLdK * static_cast<int64_t>(sizeof(T))));
  p.smem_bytes = static_cast<int>(staging_bytes<T>(p.in.x_rows, taps_max, p.rows));
  p.act = g.act;
  return p;
}

// ---------------------------------------------------------------------------------------------------------
// Per-(block, thread) phases. Each thread of `threads` takes every threads-th item, as a CUDA block does.

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) TileVec {
  T v[VEC];
};

struct TileOrigin {
  int64_t oh, ow;  // the output tile's first pixel
};

FASTCONV_HOST_DEVICE TileOrigin tile_origin(int64_t tile, int tiles_w, int tile_h, int tile_w) {
  return {tile / tiles_w * tile_h, tile % tiles_w * tile_w};
}

// x_s[q][kk] = x[n, oh0 + origin_h + q / in_w, ow0 + origin_w + q % in_w, c0 + kk] for kk < kChunkK, zero in the
// padding, past the channels and on rows q >= in_h * in_w. `vec`: 16-byte loads (cin a multiple of kVec, x
// 16-byte aligned).
template <typename T>
FASTCONV_HOST_DEVICE void load_input_chunk(T* x_s, const T* x, int64_t n, TileOrigin o, const InputTile& in, int h,
                                           int w, int cin, int c0, bool vec, int thread, int threads) {
  using TT = TileTraits<T>;
  constexpr int KC = TT::kChunkK;
  const int64_t ih0 = o.oh + in.origin_h, iw0 = o.ow + in.origin_w;
  const int pixels = in.in_h * in.in_w;
  auto source = [&](int q, int c) -> const T* {
    const int64_t ih = ih0 + q / in.in_w, iw = iw0 + q % in.in_w;
    const bool inside = q < pixels && ih >= 0 && ih < h && iw >= 0 && iw < w && c < cin;
    return inside ? x + nhwc_offset(n, ih, iw, c, h, w, cin) : nullptr;
  };
  if constexpr (TT::kVec > 1) {
    if (vec) {
      using V = TileVec<T, TT::kVec>;
      constexpr int kPerRow = KC / TT::kVec;
      for (int i = thread; i < in.x_rows * kPerRow; i += threads) {
        const int q = i / kPerRow, kk = i % kPerRow * TT::kVec;
        const T* src = source(q, c0 + kk);
        *reinterpret_cast<V*>(x_s + q * TT::kLdK + kk) = src != nullptr ? *reinterpret_cast<const V*>(src) : V{};
      }
      return;
    }
  }
  for (int i = thread; i < in.x_rows * KC; i += threads) {
    const int q = i / KC, kk = i % KC;
    const T* src = source(q, c0 + kk);
    x_s[q * TT::kLdK + kk] = src != nullptr ? *src : T(0);
  }
}

// One group of w_s: w_s[tap][nn][kk] = weight[n0 + nn, k0 + kk, tap] (weight [cout, cin, taps]), zero past
// cout and cin. Consecutive threads read consecutive taps and channels of one output channel.
template <typename T>
FASTCONV_HOST_DEVICE void load_weight_chunk(T* w_s, const T* weight, int cout, int cin, int taps, int n0, int k0,
                                            int thread, int threads) {
  using TT = TileTraits<T>;
  constexpr int KC = TT::kChunkK;
  for (int i = thread; i < kGroupN * KC * taps; i += threads) {
    const int tap = i % taps, kk = i / taps % KC, nn = i / (taps * KC);
    const int c = n0 + nn, k = k0 + kk;
    w_s[(tap * kGroupN + nn) * TT::kLdK + kk] =
        c < cout && k < cin ? weight[(static_cast<int64_t>(c) * cin + k) * taps + tap] : T(0);
  }
}

// w_s of group g: the groups are taps_max x kGroupN rows apart.
template <typename T>
FASTCONV_HOST_DEVICE int weight_group_offset(int group, int taps_max) {
  return group * taps_max * kGroupN * TileTraits<T>::kLdK;
}

// Zeroes rows [first, last) of an array of `ld` columns: the rows past the intermediate tile that conv2's
// discarded GEMM rows read.
template <typename T>
FASTCONV_HOST_DEVICE void zero_rows(T* s, int first, int last, int ld, int thread, int threads) {
  for (int64_t i = thread; i < static_cast<int64_t>(last - first) * ld; i += threads) {
    s[first * ld + i] = T(0);
  }
}

// conv1's accumulators (c_s, GEMM rows of stride in_w) for intermediate channels [n0, n0 + kTileN) -> mid_s
// (rows of stride mid_w): act(acc + bias1), zero outside the image, since conv2's zero padding applies to
// the intermediate, and zero on channels [cmid, kmid) that conv2's last K chunk reads.
template <typename T>
FASTCONV_HOST_DEVICE void store_intermediate(T* mid_s, const typename TileTraits<T>::Acc* c_s, const T* bias1,
                                             const PairPlan& p, TileOrigin o, int n0, int thread, int threads) {
  using Acc = typename TileTraits<T>::Acc;
  for (int i = thread; i < p.mid_h * p.mid_w * kTileN; i += threads) {
    const int col = i % kTileN, q = i / kTileN;
    const int c = n0 + col;
    if (c >= p.kmid) {
      continue;
    }
    const int mh = q / p.mid_w, mw = q % p.mid_w;
    const int64_t ih = o.oh + p.mid_origin_h + mh, iw = o.ow + p.mid_origin_w + mw;
    Acc v = Acc(0);
    if (c < p.cmid && ih >= 0 && ih < p.h && iw >= 0 && iw < p.w) {
      const Acc b = bias1 != nullptr ? static_cast<Acc>(bias1[c]) : Acc(0);
      v = activate(c_s[(mh * p.in.in_w + mw) * kLdC + col] + b, p.act);
    }
    mid_s[q * p.mid_ld + c] = static_cast<T>(v);
  }
}

// Where a column group of c_s goes: its column j is channel first + j of its conv (stored when < count), at
// channel y_offset + that of y, with bias (or none).
template <typename T>
struct OutputGroup {
  const T* bias;
  int first, count, y_offset;
};

// The two groups of a GEMM's columns.
template <typename T>
struct OutputGroups {
  OutputGroup<T> group[kGroups];
};

// Accumulators (c_s, GEMM rows of stride row_stride) -> y [N, H, W, y_channels]: act(acc + bias) on the output
// tile's pixels inside the image.
template <typename T>
FASTCONV_HOST_DEVICE void store_output(T* y, const typename TileTraits<T>::Acc* c_s, const OutputGroups<T>& groups,
                                       int row_stride, int tile_h, int tile_w, int64_t n, TileOrigin o, int h, int w,
                                       int y_channels, Activation act, int thread, int threads) {
  using Acc = typename TileTraits<T>::Acc;
  for (int i = thread; i < tile_h * tile_w * kTileN; i += threads) {
    const int col = i % kTileN, q = i / kTileN;
    // Selected by value, not indexed: a runtime index would put the groups in local memory on the device.
    const OutputGroup<T> grp = col < kGroupN ? groups.group[0] : groups.group[1];
    const int c = grp.first + col % kGroupN;
    const int th = q / tile_w, tw = q % tile_w;
    const int64_t oh = o.oh + th, ow = o.ow + tw;
    if (c >= grp.count || oh >= h || ow >= w) {
      continue;
    }
    const Acc b = grp.bias != nullptr ? static_cast<Acc>(grp.bias[c]) : Acc(0);
    const Acc v = activate(c_s[(th * row_stride + tw) * kLdC + col] + b, act);
    y[nhwc_offset(n, oh, ow, grp.y_offset + c, h, w, y_channels)] = static_cast<T>(v);
  }
}

}  // namespace fastconv::asym

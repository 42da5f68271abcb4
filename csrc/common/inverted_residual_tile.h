// The fused inverted_residual kernel of csrc/cuda/inverted_residual.cu, phase by phase: its tile geometry, the
// layout of its shared memory, and every step of a block that is not a tensor-core instruction, written once as
// FASTCONV_HOST_DEVICE functions of (thread index, thread count). The CUDA kernel calls them with threadIdx.x;
// the CPU emulator (csrc/cpu/inverted_residual_cuda_tiles.cpp) calls them for every thread of every block in the
// kernel's order, over a byte buffer laid out like the kernel's shared memory, so that the kernel's indexing is
// tested without a GPU. The two GEMMs (expand, project) also have a scalar form here over the same arrays: the
// CUDA-core path of fp32/fp64 runs it, and the emulator runs it in place of the tensor-core steps.
//
// One block: output pixels [oh0, oh0 + th) x [ow0, ow0 + tw) of image n, output channels [c0, c0 + cout_blk).
// Shared memory, rows are pixels of the tile (row-major, tile width first) or channels:
//   X   [p_in_pad][ldx] T      input tile with its halo, zero outside the image and past cin (expand only)
//   We  [hc][ldx] T            expand weight rows of the hidden chunk (the GEMM's column-major B)
//   E   [p_in_pad][lde] Acc    expanded chunk: act(X We^T + b_e), zero outside the image; with t = 1 the input
//   D   [p_out][ldd] T         depthwise output of the chunk, act(dw(E) + b_d)
//   Wp  [cout_blk][ldd] T      project weight rows of the block's output channels, the chunk's columns
//   Wdw [k*k][hc] Acc, b_e [hc] Acc, b_d [hc] Acc
//   C   [p_out][ldc] Acc       the projection's accumulator: live through the chunk loop when it is kept in
//                              shared memory (CUDA cores), else only the epilogue's staging, over the dead
//                              arrays of the chunk loop (offset 0)
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "activation.h"
#include "conv_geometry.h"
#include "macros.h"
#include "tiling.h"

namespace fastconv {

// Threads of a block (8 warps).
inline constexpr int kIrThreads = 256;
// Tensor-core tiles are 16x16x16: the GEMM extents are padded to multiples of this.
inline constexpr int kIrMmaTile = 16;
// Projection accumulator fragments (16x16 fp32) a warp holds in registers: 6 x 8 = 48 registers per thread.
inline constexpr int kIrAccFragsPerWarp = 6;
// Shared memory one block of an sm_90 GPU (H100/H200) may use.
inline constexpr int64_t kIrMaxSmemBytes = 227 * 1024;

struct InvertedResidualTile {
  // The problem: x [n, h, w, cin] -> y [n, ho, wo, cout] (NHWC); hidden channels, k x k depthwise.
  int64_t n;
  int h, w, ho, wo, cin, hidden, cout, k, stride, pad;
  bool expand, residual;
  Activation act;
  // The tile: th x tw output pixels read an ih x iw input tile (halo included).
  int th, tw, ih, iw, tiles_w;
  int p_in, p_in_pad, p_out;  // pixels of the input tile (padded to 16 rows for the GEMM) and of the output tile
  int cin_pad, hc;            // expand K extent; hidden channels per chunk
  int cout_blk, cout_slices;  // output channels per block (a multiple of 16; the last slice may be partial)
  int ldx, lde, ldd, ldc;     // row strides (elements) of X and We, E, D and Wp, C
  // Byte offsets of the shared arrays.
  int64_t off_x, off_we, off_e, off_d, off_wp, off_wdw, off_be, off_bd, off_c, smem_bytes;
  bool acc_in_smem;  // C holds the accumulator through the loop (CUDA cores) rather than registers
  bool vec16;        // operand tiles load 16 bytes at a time (ir_vec16)
};

// The shared arrays of one block, typed.
template <typename T, typename Acc>
struct IrSmem {
  T* x;
  T* we;
  Acc* e;
  T* d;
  T* wp;
  Acc* wdw;
  Acc* be;
  Acc* bd;
  Acc* c;
};

template <typename T, typename Acc>
FASTCONV_HOST_DEVICE IrSmem<T, Acc> ir_smem(unsigned char* base, const InvertedResidualTile& t) {
  return {reinterpret_cast<T*>(base + t.off_x),    reinterpret_cast<T*>(base + t.off_we),
          reinterpret_cast<Acc*>(base + t.off_e),  reinterpret_cast<T*>(base + t.off_d),
          reinterpret_cast<T*>(base + t.off_wp),   reinterpret_cast<Acc*>(base + t.off_wdw),
          reinterpret_cast<Acc*>(base + t.off_be), reinterpret_cast<Acc*>(base + t.off_bd),
          reinterpret_cast<Acc*>(base + t.off_c)};
}

// The op's tensors, NHWC activations and PyTorch-layout weights; biases may be null, expand ones with t = 1.
template <typename T>
struct IrTensors {
  const T* x;    // [n, h, w, cin]
  const T* we;   // [hidden, cin]
  const T* be;   // [hidden]
  const T* wdw;  // [hidden, k*k]
  const T* bd;   // [hidden]
  const T* wp;   // [cout, hidden]
  const T* bp;   // [cout]
  T* y;          // [n, ho, wo, cout]
};

// ---------------------------------------------------------------------------------------------------------
// Geometry, chosen on the host.

// The problem part of a tile from the op's checked geometry (op_args.h: InvertedResidualGeometry). Returns
// false when a size the kernel holds in 32 bits does not fit.
template <typename Geometry>
inline bool ir_problem(const Geometry& g, InvertedResidualTile& t) {
  const int64_t sizes[] = {g.h, g.w, g.ho, g.wo, g.cin, g.hidden, g.cout, g.k * g.k, g.stride, g.pad};
  for (const int64_t v : sizes) {
    if (v > INT32_MAX / 4) {
      return false;
    }
  }
  t = InvertedResidualTile{};
  t.n = g.n;
  t.h = static_cast<int>(g.h), t.w = static_cast<int>(g.w), t.ho = static_cast<int>(g.ho);
  t.wo = static_cast<int>(g.wo), t.cin = static_cast<int>(g.cin), t.hidden = static_cast<int>(g.hidden);
  t.cout = static_cast<int>(g.cout), t.k = static_cast<int>(g.k), t.stride = static_cast<int>(g.stride);
  t.pad = static_cast<int>(g.pad);
  t.expand = g.expand, t.residual = g.residual, t.act = g.act;
  return true;
}

// Lays out shared memory for a th x tw output tile and chunks of hc hidden channels; cout_blk output channels
// per block. `tensor_cores` pads rows for WMMA (16-byte rows, 32-byte aligned fragments); the CUDA-core path
// pads them by one element instead, so that threads reading a column hit distinct banks.
inline InvertedResidualTile ir_layout(InvertedResidualTile t, int th, int tw, int hc, int cout_blk, int elem_bytes,
                                      int acc_bytes, bool tensor_cores) {
  t.th = th, t.tw = tw, t.hc = hc;
  t.ih = static_cast<int>(tile_input_extent(th, t.k, t.stride, 1));
  t.iw = static_cast<int>(tile_input_extent(tw, t.k, t.stride, 1));
  t.tiles_w = static_cast<int>(ceil_div(t.wo, tw));
  t.p_in = t.ih * t.iw;
  t.p_in_pad = static_cast<int>(round_up(t.p_in, kIrMmaTile));
  t.p_out = th * tw;
  t.cin_pad = static_cast<int>(round_up(t.cin, kIrMmaTile));
  t.cout_blk = cout_blk;
  t.cout_slices = static_cast<int>(ceil_div(t.cout, cout_blk));
  const int pad_op = tensor_cores ? 8 : 1, pad_acc = tensor_cores ? 4 : 1;
  t.ldx = t.cin_pad + pad_op;
  t.lde = hc + pad_acc;
  t.ldd = hc + pad_op;
  t.ldc = t.cout_blk + pad_acc;
  t.acc_in_smem = !tensor_cores;
  int64_t at = 0;
  const auto take = [&at](int64_t bytes) {
    const int64_t off = at;
    at = round_up(at + bytes, 128);
    return off;
  };
  const int64_t c_bytes = int64_t{t.p_out} * t.ldc * acc_bytes;
  t.off_x = take(t.expand ? int64_t{t.p_in_pad} * t.ldx * elem_bytes : 0);
  t.off_we = take(t.expand ? int64_t{hc} * t.ldx * elem_bytes : 0);
  t.off_e = take(int64_t{t.p_in_pad} * t.lde * acc_bytes);
  t.off_d = take(int64_t{t.p_out} * t.ldd * elem_bytes);
  t.off_wp = take(int64_t{t.cout_blk} * t.ldd * elem_bytes);
  t.off_wdw = take(int64_t{t.k} * t.k * hc * acc_bytes);
  t.off_be = take(int64_t{hc} * acc_bytes);
  t.off_bd = take(int64_t{hc} * acc_bytes);
  if (t.acc_in_smem) {
    t.off_c = take(c_bytes);
  } else {
    // Staging for the epilogue only: C reuses the arrays of the chunk loop, which are dead by then.
    t.off_c = 0;
    at = std::max(at, c_bytes);
  }
  t.smem_bytes = at;
  return t;
}

// Output tiles of the grid (blockIdx.x); the grid is ir_tiles x cout_slices x n blocks.
inline int64_t ir_tiles(const InvertedResidualTile& t) { return ceil_div(t.ho, t.th) * t.tiles_w; }

inline int64_t ir_blocks(const InvertedResidualTile& t) { return ir_tiles(t) * t.cout_slices * t.n; }

// Chooses the tile: the largest output tile (8x8, 4x8, 4x4; stride 2: 4x8, 4x4) whose grid still has
// `min_blocks` blocks (one per multiprocessor), else the smallest; per tile the widest hidden chunk (64, 32, 16)
// that fits the shared memory. Output channels are split into slices when the accumulator of the whole cout
// would exceed kIrAccFragsPerWarp fragments per warp, and further (down to 32 channels) while the grid of the
// smallest tile is still short of `min_blocks` (small images at small batches): each slice recomputes the
// expansion, which the tensor cores have to spare there, and the slices run in parallel. Returns a tile with
// smem_bytes == 0 when nothing fits.
inline InvertedResidualTile choose_ir_tile(const InvertedResidualTile& problem, int elem_bytes, int acc_bytes,
                                           bool tensor_cores, int64_t min_blocks) {
  static constexpr int kTiles1[][2] = {{8, 8}, {4, 8}, {4, 4}};
  static constexpr int kTiles2[][2] = {{4, 8}, {4, 4}};
  const int(*tiles)[2] = problem.stride == 1 ? kTiles1 : kTiles2;
  const int count = problem.stride == 1 ? 3 : 2;
  InvertedResidualTile chosen{};
  for (int i = 0; i < count; ++i) {
    const int th = tiles[i][0], tw = tiles[i][1];
    const int max_cout = kIrMmaTile * (kIrAccFragsPerWarp * (kIrThreads / 32)) / (th * tw / kIrMmaTile);
    const int64_t slices = ceil_div(problem.cout, max_cout);
    const int cout_blk = static_cast<int>(round_up(ceil_div(problem.cout, slices), kIrMmaTile));
    for (const int hc : {64, 32, 16}) {
      const InvertedResidualTile t = ir_layout(problem, th, tw, hc, cout_blk, elem_bytes, acc_bytes, tensor_cores);
      if (t.smem_bytes > kIrMaxSmemBytes) {
        continue;
      }
      chosen = t;
      if (ir_blocks(t) >= min_blocks) {
        return t;
      }
      break;
    }
  }
  while (chosen.smem_bytes > 0 && chosen.cout_blk > 2 * kIrMmaTile && ir_blocks(chosen) < min_blocks) {
    const int cout_blk = static_cast<int>(round_up(chosen.cout_blk / 2, kIrMmaTile));
    chosen = ir_layout(problem, chosen.th, chosen.tw, chosen.hc, cout_blk, elem_bytes, acc_bytes, tensor_cores);
  }
  return chosen;
}

// ---------------------------------------------------------------------------------------------------------
// Phases of a block. Each is called by every thread of the block with its index `tid` of `nt`; shared arrays
// are written by one phase and read by the next after a barrier.

struct IrOrigin {
  int64_t n;
  int oh0, ow0, ih0, iw0, c0;  // first output pixel, first input pixel (may be < 0: padding), first channel
};

// The block's tile: blockIdx.x runs over output tiles (row-major), y over output-channel slices, z over images.
FASTCONV_HOST_DEVICE IrOrigin ir_tile_origin(const InvertedResidualTile& t, int64_t bx, int64_t by, int64_t bz) {
  IrOrigin o;
  o.n = bz;
  o.oh0 = static_cast<int>(bx / t.tiles_w) * t.th;
  o.ow0 = static_cast<int>(bx % t.tiles_w) * t.tw;
  o.ih0 = static_cast<int>(tile_input_start(o.oh0, t.stride, t.pad));
  o.iw0 = static_cast<int>(tile_input_start(o.ow0, t.stride, t.pad));
  o.c0 = static_cast<int>(by) * t.cout_blk;
  return o;
}

// Whether input-tile pixel p lies in the image.
FASTCONV_HOST_DEVICE bool ir_inside(const InvertedResidualTile& t, const IrOrigin& o, int p) {
  const int ih = o.ih0 + p / t.iw, iw = o.iw0 + p % t.iw;
  return p < t.p_in && ih >= 0 && ih < t.h && iw >= 0 && iw < t.w;
}

// x at input-tile pixel p, channel ch; zero in the padding, past the tile and past cin.
template <typename T, typename Acc>
FASTCONV_HOST_DEVICE Acc ir_input(const InvertedResidualTile& t, const IrOrigin& o, const T* x, int p, int ch) {
  if (ch >= t.cin || !ir_inside(t, o, p)) {
    return Acc(0);
  }
  return static_cast<Acc>(x[nhwc_offset(o.n, o.ih0 + p / t.iw, o.iw0 + p % t.iw, ch, t.h, t.w, t.cin)]);
}

// 16 bytes moved as one access (16 / sizeof(T) channels), so that a warp reads whole lines of NHWC channels.
struct alignas(16) IrBytes16 {
  uint32_t w[4];
};

// dst[r * ld + c] = *source(r, c) for r < rows, c < cols (zero where source gives null): the shared operand
// tiles from their global rows. VEC16 moves 16 bytes at a time: cols, ld and every non-null source run are
// then whole aligned 16-byte runs.
template <bool VEC16, typename T, typename Source>
FASTCONV_HOST_DEVICE void ir_copy_rows(int tid, int nt, int rows, int cols, T* dst, int ld, const Source& source) {
  constexpr int kVec = VEC16 ? 16 / static_cast<int>(sizeof(T)) : 1;
  const int per_row = cols / kVec;
  for (int i = tid; i < rows * per_row; i += nt) {
    const int r = i / per_row, c = (i % per_row) * kVec;
    const T* src = source(r, c);
    if constexpr (VEC16) {
      IrBytes16 v{};
      if (src != nullptr) {
#if defined(__CUDA_ARCH__)
        v = *reinterpret_cast<const IrBytes16*>(src);
#else
        std::memcpy(&v, src, sizeof(v));  // the host compiler's aliasing rules
#endif
      }
#if defined(__CUDA_ARCH__)
      *reinterpret_cast<IrBytes16*>(dst + r * ld + c) = v;
#else
      std::memcpy(dst + r * ld + c, &v, sizeof(v));
#endif
    } else {
      dst[r * ld + c] = src != nullptr ? *src : T(0);
    }
  }
}

template <typename T, typename Source>
FASTCONV_HOST_DEVICE void ir_copy_rows(bool vec16, int tid, int nt, int rows, int cols, T* dst, int ld,
                                       const Source& source) {
  if (vec16) {
    ir_copy_rows<true>(tid, nt, rows, cols, dst, ld, source);
  } else {
    ir_copy_rows<false>(tid, nt, rows, cols, dst, ld, source);
  }
}

// Whether the operand tiles can be loaded 16 bytes at a time: tensor-core layouts (16-byte rows), cin and hidden
// whole 16-byte runs, and the pointers of x, the expand and the project weight 16-byte aligned.
inline bool ir_vec16(const InvertedResidualTile& t, int elem_bytes, const void* x, const void* we, const void* wp) {
  const int vec = 16 / elem_bytes;
  const auto aligned = [](const void* ptr) { return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return !t.acc_in_smem && t.cin % vec == 0 && t.hidden % vec == 0 && aligned(x) && aligned(we) && aligned(wp);
}

// X = the input tile, [p_in_pad][cin_pad] of [.][ldx]. Once per block, before the chunk loop.
template <typename T>
FASTCONV_HOST_DEVICE void ir_load_input(int tid, int nt, const InvertedResidualTile& t, const IrOrigin& o,
                                        const T* x, T* xs) {
  ir_copy_rows(t.vec16, tid, nt, t.p_in_pad, t.cin_pad, xs, t.ldx, [&](int p, int ch) -> const T* {
    if (ch >= t.cin || !ir_inside(t, o, p)) {
      return nullptr;
    }
    return x + nhwc_offset(o.n, o.ih0 + p / t.iw, o.iw0 + p % t.iw, ch, t.h, t.w, t.cin);
  });
}

// Columns the loops cover in the chunk starting at hidden channel h0: its valid ones, rounded up to 16.
FASTCONV_HOST_DEVICE int ir_chunk_width(const InvertedResidualTile& t, int h0) {
  const int valid = t.hidden - h0 < t.hc ? t.hidden - h0 : t.hc;
  return static_cast<int>(round_up(valid, kIrMmaTile));
}

// The chunk's weights: We [cw][cin_pad], Wp [cout_blk][cw], Wdw [k*k][cw], b_e, b_d [cw]; zero past hidden,
// cin and cout. With t = 1 also E = the input tile's channels [h0, h0 + cw), zero outside the image.
template <typename T, typename Acc>
FASTCONV_HOST_DEVICE void ir_load_chunk(int tid, int nt, const InvertedResidualTile& t, const IrOrigin& o,
                                        const IrTensors<T>& g, const IrSmem<T, Acc>& s, int h0, int cw) {
  const int taps = t.k * t.k;
  if (t.expand) {
    ir_copy_rows(t.vec16, tid, nt, cw, t.cin_pad, s.we, t.ldx, [&](int j, int ch) -> const T* {
      return h0 + j < t.hidden && ch < t.cin ? g.we + int64_t{h0 + j} * t.cin + ch : nullptr;
    });
  } else {
    for (int i = tid; i < t.p_in * cw; i += nt) {
      const int p = i / cw, j = i % cw;
      s.e[p * t.lde + j] = ir_input<T, Acc>(t, o, g.x, p, h0 + j);
    }
  }
  ir_copy_rows(t.vec16, tid, nt, t.cout_blk, cw, s.wp, t.ldd, [&](int nn, int j) -> const T* {
    return o.c0 + nn < t.cout && h0 + j < t.hidden ? g.wp + int64_t{o.c0 + nn} * t.hidden + h0 + j : nullptr;
  });
  for (int i = tid; i < taps * cw; i += nt) {
    const int tap = i / cw, j = i % cw;
    s.wdw[tap * t.hc + j] = h0 + j < t.hidden ? static_cast<Acc>(g.wdw[int64_t{h0 + j} * taps + tap]) : Acc(0);
  }
  for (int j = tid; j < cw; j += nt) {
    const bool valid = h0 + j < t.hidden;
    s.be[j] = valid && g.be != nullptr ? static_cast<Acc>(g.be[h0 + j]) : Acc(0);
    s.bd[j] = valid && g.bd != nullptr ? static_cast<Acc>(g.bd[h0 + j]) : Acc(0);
  }
}

// c[m][n] (+)= sum_k a[m][k] * b[n][k] for m < rows (a multiple of 4), n < cols (a multiple of 2): the GEMMs in
// scalar form. Each thread owns 4 x 2 outputs, rows m0..m0+3 and columns n, n + cols/2: six shared loads per
// eight multiply-adds; a warp broadcasts the a rows and reads b rows of odd stride, in distinct banks.
template <bool ACCUMULATE, typename T, typename Acc>
FASTCONV_HOST_DEVICE void ir_gemm_scalar(int tid, int nt, int rows, int cols, int depth, const T* a, int lda,
                                         const T* b, int ldb, Acc* c, int ldc) {
  constexpr int kRows = 4, kCols = 2;
  const int col_groups = cols / kCols;
  for (int i = tid; i < rows / kRows * col_groups; i += nt) {
    const int m0 = i / col_groups * kRows, n0 = i % col_groups;
    Acc sum[kRows][kCols] = {};
    for (int k = 0; k < depth; ++k) {
      Acc bv[kCols];
      for (int j = 0; j < kCols; ++j) {
        bv[j] = static_cast<Acc>(b[(n0 + j * col_groups) * ldb + k]);
      }
      for (int r = 0; r < kRows; ++r) {
        const Acc av = static_cast<Acc>(a[(m0 + r) * lda + k]);
        for (int j = 0; j < kCols; ++j) {
          sum[r][j] += av * bv[j];
        }
      }
    }
    for (int r = 0; r < kRows; ++r) {
      for (int j = 0; j < kCols; ++j) {
        Acc& out = c[(m0 + r) * ldc + n0 + j * col_groups];
        out = ACCUMULATE ? out + sum[r][j] : sum[r][j];
      }
    }
  }
}

// The expand GEMM in scalar form: E[p][j] = sum_ch X[p][ch] * We[j][ch], p < p_in_pad, j < cw.
template <typename T, typename Acc>
FASTCONV_HOST_DEVICE void ir_expand_scalar(int tid, int nt, const InvertedResidualTile& t, const IrSmem<T, Acc>& s,
                                           int cw) {
  ir_gemm_scalar<false>(tid, nt, t.p_in_pad, cw, t.cin_pad, s.x, t.ldx, s.we, t.ldx, s.e, t.lde);
}

// E = act(E + b_e) inside the image, 0 outside: the depthwise pads the expanded tensor with zeros.
template <typename T, typename Acc>
FASTCONV_HOST_DEVICE void ir_activate_expanded(int tid, int nt, const InvertedResidualTile& t, const IrOrigin& o,
                                               const IrSmem<T, Acc>& s, int cw) {
  for (int i = tid; i < t.p_in * cw; i += nt) {
    const int p = i / cw, j = i % cw;
    Acc& e = s.e[p * t.lde + j];
    e = ir_inside(t, o, p) ? activate(e + s.be[j], t.act) : Acc(0);
  }
}

// D[q][j] = act(sum_taps E[tap pixel of q][j] * Wdw[tap][j] + b_d[j]) for the output-tile pixels q.
template <typename T, typename Acc>
FASTCONV_HOST_DEVICE void ir_depthwise(int tid, int nt, const InvertedResidualTile& t, const IrSmem<T, Acc>& s,
                                       int cw) {
  for (int i = tid; i < t.p_out * cw; i += nt) {
    const int q = i / cw, j = i % cw;
    const int py = (q / t.tw) * t.stride, px = (q % t.tw) * t.stride;
    Acc acc = s.bd[j];
    for (int r = 0; r < t.k; ++r) {
      const Acc* er = s.e + ((py + r) * t.iw + px) * t.lde + j;
      const Acc* wr = s.wdw + r * t.k * t.hc + j;
      for (int c = 0; c < t.k; ++c) {
        acc += er[c * t.lde] * wr[c * t.hc];
      }
    }
    s.d[q * t.ldd + j] = static_cast<T>(activate(acc, t.act));
  }
}

// C = 0: the accumulator, when it lives in shared memory.
template <typename Acc>
FASTCONV_HOST_DEVICE void ir_zero_acc(int tid, int nt, const InvertedResidualTile& t, Acc* c) {
  for (int i = tid; i < t.p_out * t.ldc; i += nt) {
    c[i] = Acc(0);
  }
}

// The project GEMM in scalar form: acc[q][nn] += sum_j D[q][j] * Wp[nn][j], acc of row stride ldc.
template <typename T, typename Acc>
FASTCONV_HOST_DEVICE void ir_project_scalar(int tid, int nt, const InvertedResidualTile& t, const IrSmem<T, Acc>& s,
                                            int cw, Acc* acc) {
  ir_gemm_scalar<true>(tid, nt, t.p_out, t.cout_blk, cw, s.d, t.ldd, s.wp, t.ldd, acc, t.ldc);
}

// y = C + b_p (+ x) for the block's output pixels inside the image and its channels below cout.
template <typename T, typename Acc>
FASTCONV_HOST_DEVICE void ir_epilogue(int tid, int nt, const InvertedResidualTile& t, const IrOrigin& o,
                                      const IrTensors<T>& g, const Acc* c) {
  for (int i = tid; i < t.p_out * t.cout_blk; i += nt) {
    const int q = i / t.cout_blk, nn = i % t.cout_blk;
    const int oh = o.oh0 + q / t.tw, ow = o.ow0 + q % t.tw, ch = o.c0 + nn;
    if (oh >= t.ho || ow >= t.wo || ch >= t.cout) {
      continue;
    }
    Acc v = c[q * t.ldc + nn];
    if (g.bp != nullptr) {
      v += static_cast<Acc>(g.bp[ch]);
    }
    // The residual needs stride 1 and cout == cin: output pixel (oh, ow) is input pixel (oh, ow).
    if (t.residual) {
      v += static_cast<Acc>(g.x[nhwc_offset(o.n, oh, ow, ch, t.h, t.w, t.cin)]);
    }
    g.y[nhwc_offset(o.n, oh, ow, ch, t.ho, t.wo, t.cout)] = static_cast<T>(v);
  }
}

}  // namespace fastconv

// CPU emulator of the CUDA kernels asymmetric_conv_pair and asymmetric_conv_parallel (csrc/cuda), so that their
// tiling and indexing are tested without a GPU. It plans the launch as the CUDA launcher does (for an H100/H200's
// SM count) and runs each block's phases of csrc/common/asymmetric_conv_tile.h in the kernel's order, each phase
// over every thread index, on a byte buffer laid out as the block's shared memory. The tap loop of
// asymmetric_conv.cuh (WMMA or CUDA-core FMAs) is replaced by a scalar matrix product over the same arrays,
// accumulated across K chunks and stored to c_s as the kernel stores its accumulators.
//
// Registered as the private ops fastconv_tiles::asymmetric_conv_pair / asymmetric_conv_parallel (the schemas of
// fastconv_C's), CPU only.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "../common/asymmetric_conv_tile.h"
#include "../common/op_args.h"
#include "../common/schemas.h"

namespace fastconv::tiles {
namespace {

using asym::TileTraits;

// One block's shared memory, 128-byte aligned as the kernel's, filled with 0xFF bytes (NaN in every float
// type): a phase that reads what no earlier phase wrote puts NaN into the output.
class BlockSmem {
 public:
  explicit BlockSmem(int bytes) : buf_(static_cast<size_t>(bytes) + 128) {}

  unsigned char* fresh() {
    std::memset(buf_.data(), 0xFF, buf_.size());
    const auto addr = reinterpret_cast<uintptr_t>(buf_.data());
    return buf_.data() + (128 - addr % 128) % 128;
  }

 private:
  std::vector<unsigned char> buf_;
};

// Runs a phase as a block's threads do: phase(thread, threads) for every thread index.
template <typename T, typename Phase>
void for_each_thread(Phase&& phase) {
  for (int t = 0; t < TileTraits<T>::kThreads; ++t) {
    phase(t, TileTraits<T>::kThreads);
  }
}

// The block's accumulators and the tap loop of asymmetric_conv.cuh's TileGemm, as scalar arithmetic.
template <typename T>
class EmulatedGemm {
  using TT = TileTraits<T>;
  using Acc = typename TT::Acc;

 public:
  EmulatedGemm() : acc_(static_cast<size_t>(TT::kMaxRows) * asym::kTileN) {}

  void zero() { std::fill(acc_.begin(), acc_.end(), Acc(0)); }

  void mma(const T* src, int ld, int row_stride, const T* w_s, int group_stride, asym::TapConv conv0,
           asym::TapConv conv1, int rows) {
    TORCH_CHECK(rows % asym::kRowRun == 0 && rows <= TT::kMaxRows, "GEMM rows ", rows, " out of the kernel's range");
    constexpr int KC = TT::kChunkK;
    for (int g = 0; g < asym::kGroups; ++g) {
      const asym::TapConv conv = g == 0 ? conv0 : conv1;
      const int taps = conv.kh * conv.kw;
      // The chunk's operands in the accumulator type: b_[tap][j][k], and a_[q][k] for the staged rows q the
      // GEMM rows read (all of them lie in [first, first + rows + reach)).
      b_.resize(static_cast<size_t>(taps) * asym::kGroupN * KC);
      for (int i = 0; i < taps * asym::kGroupN; ++i) {
        for (int k = 0; k < KC; ++k) {
          b_[i * KC + k] = static_cast<Acc>(w_s[g * group_stride + i * TT::kLdK + k]);
        }
      }
      const int first = conv.row_off * row_stride + conv.col_off;
      const int reach = (conv.kh - 1) * row_stride + conv.kw;
      a_.resize(static_cast<size_t>(rows + reach) * KC);
      for (int q = 0; q < rows + reach - 1; ++q) {
        for (int k = 0; k < KC; ++k) {
          a_[q * KC + k] = static_cast<Acc>(src[static_cast<int64_t>(first + q) * ld + k]);
        }
      }
      for (int p = 0; p < rows; ++p) {
        Acc* out = acc_.data() + p * asym::kTileN + g * asym::kGroupN;
        for (int r = 0; r < conv.kh; ++r) {
          for (int s = 0; s < conv.kw; ++s) {
            const Acc* a = a_.data() + (p + r * row_stride + s) * KC;
            const Acc* b = b_.data() + (r * conv.kw + s) * asym::kGroupN * KC;
            for (int j = 0; j < asym::kGroupN; ++j) {
              Acc sum = 0;
              for (int k = 0; k < KC; ++k) {
                sum += a[k] * b[j * KC + k];
              }
              out[j] += sum;
            }
          }
        }
      }
    }
  }

  void store(Acc* c_s, int rows) const {
    for (int p = 0; p < rows; ++p) {
      for (int c = 0; c < asym::kTileN; ++c) {
        c_s[p * asym::kLdC + c] = acc_[p * asym::kTileN + c];
      }
    }
  }

 private:
  std::vector<Acc> acc_, a_, b_;
};

// The CUDA launchers' choice of 16-byte input loads (cuda_common.cuh: vector_aligned).
template <typename T>
bool vector_loads(const at::Tensor& x, int64_t cin) {
  constexpr int kVec = TileTraits<T>::kVec;
  return kVec > 1 && cin % kVec == 0 && reinterpret_cast<uintptr_t>(x.const_data_ptr()) % 16 == 0;
}

// asymmetric_conv_pair_kernel, block by block.
template <typename T>
void emulate_pair(const at::Tensor& x_t, const at::Tensor& w1_t, const at::Tensor& b1_t, const at::Tensor& w2_t,
                  const at::Tensor& b2_t, at::Tensor& y_t, const asym::PairPlan& p, int64_t batch) {
  using TT = TileTraits<T>;
  using Acc = typename TT::Acc;
  const T *x = x_t.const_data_ptr<T>(), *weight1 = w1_t.const_data_ptr<T>(), *weight2 = w2_t.const_data_ptr<T>();
  const T *bias1 = data_or_null<T>(b1_t), *bias2 = data_or_null<T>(b2_t);
  T* y = y_t.mutable_data_ptr<T>();
  const bool vec = vector_loads<T>(x_t, p.cin);
  const int group_stride = asym::weight_group_offset<T>(1, p.taps_max);
  const int taps1 = p.conv1.kh * p.conv1.kw, taps2 = p.conv2.kh * p.conv2.kw;
  BlockSmem block_smem(p.smem_bytes);
  EmulatedGemm<T> gemm;
  for (int64_t n = 0; n < batch; ++n) {
    for (int slice = 0; slice < p.slices; ++slice) {
      for (int tile = 0; tile < p.tiles; ++tile) {
        unsigned char* smem = block_smem.fresh();
        T* x_s = reinterpret_cast<T*>(smem);
        T* w_s = reinterpret_cast<T*>(smem + p.w_offset);
        Acc* c_s = reinterpret_cast<Acc*>(smem);
        T* mid_s = reinterpret_cast<T*>(smem + p.mid_offset);
        const asym::TileOrigin o = asym::tile_origin(tile, p.tiles_w, p.tile_h, p.tile_w);

        for_each_thread<T>([&](int t, int ts) { asym::zero_rows(mid_s, p.mid_h * p.mid_w, p.mid_rows, p.mid_ld, t, ts); });
        for (int n0 = 0; n0 < p.cmid; n0 += asym::kTileN) {
          gemm.zero();
          for (int k0 = 0; k0 < p.cin; k0 += TT::kChunkK) {
            for_each_thread<T>([&](int t, int ts) {
              asym::load_input_chunk(x_s, x, n, o, p.in, p.h, p.w, p.cin, k0, vec, t, ts);
              for (int g = 0; g < asym::kGroups; ++g) {
                asym::load_weight_chunk(w_s + g * group_stride, weight1, p.cmid, p.cin, taps1,
                                        n0 + g * asym::kGroupN, k0, t, ts);
              }
            });
            gemm.mma(x_s, TT::kLdK, p.in.in_w, w_s, group_stride, p.conv1, p.conv1, p.rows1);
          }
          gemm.store(c_s, p.rows1);
          for_each_thread<T>([&](int t, int ts) { asym::store_intermediate(mid_s, c_s, bias1, p, o, n0, t, ts); });
        }

        const int first = slice * p.slice_channels;
        const int last = std::min(p.cout, first + p.slice_channels);
        for (int n0 = first; n0 < last; n0 += asym::kTileN) {
          gemm.zero();
          for (int k0 = 0; k0 < p.kmid; k0 += TT::kChunkK) {
            for_each_thread<T>([&](int t, int ts) {
              for (int g = 0; g < asym::kGroups; ++g) {
                asym::load_weight_chunk(w_s + g * group_stride, weight2, p.cout, p.cmid, taps2,
                                        n0 + g * asym::kGroupN, k0, t, ts);
              }
            });
            gemm.mma(mid_s + k0, p.mid_ld, p.mid_w, w_s, group_stride, p.conv2, p.conv2, p.rows2);
          }
          gemm.store(c_s, p.rows2);
          const asym::OutputGroups<T> groups{{{bias2, n0, last, 0}, {bias2, n0 + asym::kGroupN, last, 0}}};
          for_each_thread<T>([&](int t, int ts) {
            asym::store_output(y, c_s, groups, p.mid_w, p.tile_h, p.tile_w, n, o, p.h, p.w, p.cout, p.act, t, ts);
          });
        }
      }
    }
  }
}

// asymmetric_conv_parallel_kernel, block by block.
template <typename T>
void emulate_parallel(const at::Tensor& x_t, const at::Tensor& wa_t, const at::Tensor& ba_t, const at::Tensor& wb_t,
                      const at::Tensor& bb_t, at::Tensor& y_t, const asym::ParallelPlan& p, int64_t batch) {
  using TT = TileTraits<T>;
  using Acc = typename TT::Acc;
  const T *x = x_t.const_data_ptr<T>(), *weight_a = wa_t.const_data_ptr<T>(), *weight_b = wb_t.const_data_ptr<T>();
  T* y = y_t.mutable_data_ptr<T>();
  const bool vec = vector_loads<T>(x_t, p.cin);
  const int group_stride = asym::weight_group_offset<T>(1, p.taps_max);
  const T *bias_a = data_or_null<T>(ba_t), *bias_b = data_or_null<T>(bb_t);
  BlockSmem block_smem(p.smem_bytes);
  EmulatedGemm<T> gemm;
  for (int64_t n = 0; n < batch; ++n) {
    for (int slice = 0; slice < p.slices; ++slice) {
      for (int tile = 0; tile < p.tiles; ++tile) {
        unsigned char* smem = block_smem.fresh();
        T* x_s = reinterpret_cast<T*>(smem);
        T* w_s = reinterpret_cast<T*>(smem + p.w_offset);
        Acc* c_s = reinterpret_cast<Acc*>(smem);
        const asym::TileOrigin o = asym::tile_origin(tile, p.tiles_w, p.tile_h, p.tile_w);
        const int first = slice * asym::kGroupN;
        gemm.zero();
        for (int k0 = 0; k0 < p.cin; k0 += TT::kChunkK) {
          for_each_thread<T>([&](int t, int ts) {
            asym::load_input_chunk(x_s, x, n, o, p.in, p.h, p.w, p.cin, k0, vec, t, ts);
            asym::load_weight_chunk(w_s, weight_a, p.cout_a, p.cin, p.conv_a.kh * p.conv_a.kw, first, k0, t, ts);
            asym::load_weight_chunk(w_s + group_stride, weight_b, p.cout_b, p.cin, p.conv_b.kh * p.conv_b.kw, first,
                                    k0, t, ts);
          });
          gemm.mma(x_s, TT::kLdK, p.in.in_w, w_s, group_stride, p.conv_a, p.conv_b, p.rows);
        }
        gemm.store(c_s, p.rows);
        const asym::OutputGroups<T> groups{{{bias_a, first, p.cout_a, 0}, {bias_b, first, p.cout_b, p.cout_a}}};
        for_each_thread<T>([&](int t, int ts) {
          asym::store_output(y, c_s, groups, p.in.in_w, p.tile_h, p.tile_w, n, o, p.h, p.w, p.cout_a + p.cout_b,
                             p.act, t, ts);
        });
      }
    }
  }
}

constexpr const char* kPair = "asymmetric_conv_pair";
constexpr const char* kParallel = "asymmetric_conv_parallel";

at::Tensor asymmetric_conv_pair_tiles(const at::Tensor& x_in, const at::Tensor& weight1,
                                      const std::optional<at::Tensor>& bias1, const at::Tensor& weight2,
                                      const std::optional<at::Tensor>& bias2, c10::string_view activation) {
  const AsymmetricPairGeometry g =
      check_asymmetric_pair_args(kPair, c10::DeviceType::CPU, x_in, weight1, bias1, weight2, bias2,
                                 std::string_view(activation.data(), activation.size()));
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {g.n, g.second.cout, g.h, g.w});
  if (y.numel() == 0) {
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_tiles::asymmetric_conv_pair",
                                  [&] {
                                    const asym::PairPlan p = asym::plan_pair<scalar_t>(kPair, g, asym::kHopperSmCount);
                                    emulate_pair<scalar_t>(x, weight1.contiguous(), contiguous_or_undefined(bias1),
                                                           weight2.contiguous(), contiguous_or_undefined(bias2), y, p,
                                                           g.n);
                                  });
  return y;
}

at::Tensor asymmetric_conv_parallel_tiles(const at::Tensor& x_in, const at::Tensor& weight_a,
                                          const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                                          const std::optional<at::Tensor>& bias_b, c10::string_view activation) {
  const AsymmetricParallelGeometry g =
      check_asymmetric_parallel_args(kParallel, c10::DeviceType::CPU, x_in, weight_a, bias_a, weight_b, bias_b,
                                     std::string_view(activation.data(), activation.size()));
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {g.n, g.a.cout + g.b.cout, g.h, g.w});
  if (y.numel() == 0) {
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "fastconv_tiles::asymmetric_conv_parallel", [&] {
                                    const asym::ParallelPlan p = asym::plan_parallel<scalar_t>(kParallel, g);
                                    emulate_parallel<scalar_t>(x, weight_a.contiguous(),
                                                               contiguous_or_undefined(bias_a), weight_b.contiguous(),
                                                               contiguous_or_undefined(bias_b), y, p, g.n);
                                  });
  return y;
}

// fastconv_C's schema of `op`.
const char* schema_of(std::string_view op) {
  for (const char* schema : kOpSchemas) {
    const std::string_view s(schema);
    if (s.substr(0, op.size()) == op && s.size() > op.size() && s[op.size()] == '(') {
      return schema;
    }
  }
  TORCH_CHECK(false, "no schema for ", op);
  return nullptr;  // unreachable: the check above throws
}

}  // namespace
}  // namespace fastconv::tiles

TORCH_LIBRARY_FRAGMENT(fastconv_tiles, m) {
  m.def(fastconv::tiles::schema_of(fastconv::tiles::kPair));
  m.def(fastconv::tiles::schema_of(fastconv::tiles::kParallel));
}

TORCH_LIBRARY_IMPL(fastconv_tiles, CPU, m) {
  m.impl(fastconv::tiles::kPair, &fastconv::tiles::asymmetric_conv_pair_tiles);
  m.impl(fastconv::tiles::kParallel, &fastconv::tiles::asymmetric_conv_parallel_tiles);
}

// fastconv_tiles::inverted_residual: the CUDA kernel of csrc/cuda/inverted_residual.cu emulated on the CPU, so
// that its tiling and indexing are tested on machines without a GPU.
//
// It chooses the tile the kernel would choose on an H100/H200 (132 multiprocessors) and runs every block of the
// grid, each over a byte buffer laid out as the kernel's shared memory, through the kernel's phases
// (common/inverted_residual_tile.h) in the kernel's order, each phase for every thread index before the next
// (a barrier). The tensor-core steps (WMMA) of fp16/bf16 become the scalar GEMMs of the same header over the same
// shared arrays, with the register accumulator emulated by a [p_out][ldc] array that is stored into shared memory
// after the chunk loop, over the dead loop arrays, as the kernel does. The shared buffer starts each block filled
// with NaNs, so that a phase reading what no earlier phase wrote poisons the output.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../common/inverted_residual_call.h"
#include "../common/schemas.h"

namespace fastconv::cpu {
namespace {

constexpr const char* kOp = "inverted_residual";
// Multiprocessors of an H100/H200: the tile choice depends on the grid filling them.
constexpr int64_t kEmulatedMultiprocessors = 132;

// One barrier-to-barrier phase of a block: `phase(tid)` for every thread index.
template <typename F>
void for_each_thread(const F& phase) {
  for (int tid = 0; tid < kIrThreads; ++tid) {
    phase(tid);
  }
}

// Block (bx, by, bz) of the kernel. smem: the block's shared memory; regs [p_out * ldc]: the accumulator
// fragments of the tensor-core path.
template <typename T, bool kTensorCores>
void run_block(const IrTensors<T>& g, const InvertedResidualTile& t, int64_t bx, int64_t by, int64_t bz,
               std::vector<unsigned char>& smem, std::vector<at::opmath_type<T>>& regs) {
  using Acc = at::opmath_type<T>;
  constexpr int nt = kIrThreads;
  std::memset(smem.data(), 0xFF, smem.size());  // NaN in every floating-point type
  const IrSmem<T, Acc> s = ir_smem<T, Acc>(smem.data(), t);
  const IrOrigin o = ir_tile_origin(t, bx, by, bz);
  Acc* acc = kTensorCores ? regs.data() : s.c;
  if (t.expand) {
    for_each_thread([&](int tid) { ir_load_input<T>(tid, nt, t, o, g.x, s.x); });
  }
  for_each_thread([&](int tid) { ir_zero_acc(tid, nt, t, acc); });
  for (int h0 = 0; h0 < t.hidden; h0 += t.hc) {
    const int cw = ir_chunk_width(t, h0);
    for_each_thread([&](int tid) { ir_load_chunk<T, Acc>(tid, nt, t, o, g, s, h0, cw); });
    if (t.expand) {
      for_each_thread([&](int tid) { ir_expand_scalar<T, Acc>(tid, nt, t, s, cw); });
      for_each_thread([&](int tid) { ir_activate_expanded<T, Acc>(tid, nt, t, o, s, cw); });
    }
    for_each_thread([&](int tid) { ir_depthwise<T, Acc>(tid, nt, t, s, cw); });
    for_each_thread([&](int tid) { ir_project_scalar<T, Acc>(tid, nt, t, s, cw, acc); });
  }
  if constexpr (kTensorCores) {
    // store_matrix_sync of every fragment: rows p_out, columns cout_blk of C.
    for (int q = 0; q < t.p_out; ++q) {
      std::memcpy(s.c + q * t.ldc, acc + q * t.ldc, sizeof(Acc) * t.cout_blk);
    }
  }
  for_each_thread([&](int tid) { ir_epilogue<T, Acc>(tid, nt, t, o, g, s.c); });
}

template <typename T>
void run_grid(const IrTensors<T>& g, const InvertedResidualTile& problem) {
  using Acc = at::opmath_type<T>;
  constexpr bool kTensorCores = std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>;
  InvertedResidualTile t = choose_ir_tile(problem, sizeof(T), sizeof(Acc), kTensorCores, kEmulatedMultiprocessors);
  t.vec16 = ir_vec16(t, sizeof(T), g.x, g.we, g.wp);
  TORCH_CHECK(t.smem_bytes > 0, "fastconv_tiles::", kOp, ": a tile of ", problem.cin,
              " input channels does not fit the shared memory of one block (", kIrMaxSmemBytes, " bytes)");
  const int64_t tiles = ir_tiles(t);
  at::parallel_for(0, ir_blocks(t), 1, [&](int64_t begin, int64_t end) {
    std::vector<unsigned char> smem(static_cast<size_t>(t.smem_bytes));
    std::vector<Acc> regs(kTensorCores ? static_cast<size_t>(t.p_out) * t.ldc : 0);
    for (int64_t b = begin; b < end; ++b) {
      // blockIdx.x fastest, as the hardware numbers them.
      run_block<T, kTensorCores>(g, t, b % tiles, (b / tiles) % t.cout_slices, b / (tiles * t.cout_slices), smem,
                                 regs);
    }
  });
}

at::Tensor inverted_residual_cuda_tiles(const at::Tensor& x_in, const std::optional<at::Tensor>& expand_weight,
                                        const std::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                                        const std::optional<at::Tensor>& dw_bias, const at::Tensor& project_weight,
                                        const std::optional<at::Tensor>& project_bias, int64_t stride, bool residual,
                                        c10::string_view activation) {
  return call_inverted_residual(kOp, c10::DeviceType::CPU, x_in, expand_weight, expand_bias, dw_weight, dw_bias,
                                project_weight, project_bias, stride, residual,
                                std::string_view(activation.data(), activation.size()),
                                [](const auto& g, const InvertedResidualTile& problem) { run_grid(g, problem); });
}

// The schema of fastconv_C::inverted_residual (common/schemas.h).
const char* inverted_residual_schema() {
  for (const char* schema : kOpSchemas) {
    if (std::string_view(schema).starts_with("inverted_residual(")) {
      return schema;
    }
  }
  TORCH_CHECK(false, "common/schemas.h has no inverted_residual schema");
  return nullptr;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastconv_tiles, m) { m.def(inverted_residual_schema()); }

TORCH_LIBRARY_IMPL(fastconv_tiles, CPU, m) { m.impl(kOp, &inverted_residual_cuda_tiles); }

}  // namespace fastconv::cpu

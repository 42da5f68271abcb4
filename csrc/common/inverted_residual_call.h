// The host side of the tiled inverted_residual kernel, shared by its CUDA launcher (cuda/inverted_residual.cu)
// and its CPU emulation (cpu/inverted_residual_cuda_tiles.cpp): argument checks, the tile problem, the output,
// dense operands, and the dispatch over dtypes to the device's runner.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>

#include "inverted_residual_tile.h"
#include "op_args.h"

namespace fastconv {

// Checks the arguments as fastconv_C::inverted_residual does on `device`, allocates y [N, cout, ho, wo]
// (channels_last) and, unless it is empty, calls run(IrTensors<scalar_t>, problem) with every operand dense in
// x's dtype. Returns y.
template <typename Run>
at::Tensor call_inverted_residual(const char* op, c10::DeviceType device, const at::Tensor& x_in,
                                  const std::optional<at::Tensor>& expand_weight,
                                  const std::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                                  const std::optional<at::Tensor>& dw_bias, const at::Tensor& project_weight,
                                  const std::optional<at::Tensor>& project_bias, int64_t stride, bool residual,
                                  std::string_view activation, const Run& run) {
  const InvertedResidualGeometry geo =
      check_inverted_residual_args(op, device, x_in, expand_weight, expand_bias, dw_weight, dw_bias,
                                   project_weight, project_bias, stride, residual, activation);
  InvertedResidualTile problem;
  TORCH_CHECK_VALUE(ir_problem(geo, problem), "fastconv_C::", op, ": sizes must fit in 32 bits; got x ",
                    x_in.sizes(), " with ", geo.hidden, " hidden channels");
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {geo.n, geo.cout, geo.ho, geo.wo});
  if (y.numel() == 0) {
    return y;
  }
  const at::Tensor we = contiguous_or_undefined(expand_weight);
  const at::Tensor be = contiguous_or_undefined(expand_bias), bd = contiguous_or_undefined(dw_bias),
                   bp = contiguous_or_undefined(project_bias);
  const at::Tensor wdw = dw_weight.contiguous(), wp = project_weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_C::inverted_residual", [&] {
    const auto ptr = data_or_null<scalar_t>;
    const IrTensors<scalar_t> g{ptr(x),  ptr(we), ptr(be), ptr(wdw),
                                ptr(bd), ptr(wp), ptr(bp), y.mutable_data_ptr<scalar_t>()};
    run(g, problem);
  });
  return y;
}

}  // namespace fastconv

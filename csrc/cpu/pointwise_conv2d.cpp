// pointwise_conv2d on CPU: y = act(x W + bias + residual), a GEMM [N*H*W, Cin] x [Cin, Cout] over the
// pixels of a channels_last x, in chunks of pixels, with the epilogue fused into each chunk.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/op_args.h"
#include "tiles.h"

namespace fastconv::cpu {
namespace {

constexpr const char* kOp = "pointwise_conv2d";

// Pixels per task: chunks of about equal size, at most kMaxChunk (a block of A that stays in L2), and one per
// thread when every chunk still gets kMinChunk (a few register tiles).
constexpr int64_t kMaxChunk = 240, kMinChunk = 24;

int64_t pixel_chunk(int64_t pixels) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t chunks = std::max(ceil_div(pixels, kMaxChunk), std::min(threads, ceil_div(pixels, kMinChunk)));
  return ceil_div(pixels, chunks);
}

template <typename scalar_t>
void pointwise_kernel(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      Activation act, const std::optional<at::Tensor>& residual, at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const MicroKernels<acc_t>& mk = microkernels<acc_t>();
  const int64_t pixels = x.size(0) * x.size(2) * x.size(3), cin = x.size(1), cout = weight.size(0);
  const PackedConv<acc_t> w = pack_conv<acc_t, scalar_t>(weight, bias, mk.nr);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* rp = residual.has_value() ? residual->const_data_ptr<scalar_t>() : nullptr;
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const int64_t ldc = w.padded_n();
  const int64_t chunk = pixel_chunk(pixels);
  run_tasks(
      ceil_div(pixels, chunk),
      [&] {
        return std::pair(Scratch<acc_t>(chunk * ldc), Scratch<acc_t>(conversion_size<acc_t, scalar_t>(chunk * cin)));
      },
      [&](auto& scratch, int64_t task) {
        const int64_t p0 = task * chunk, rows = std::min(chunk, pixels - p0);
        const acc_t* a = as_acc(xp + p0 * cin, rows * cin, scratch.second.get());
        gemm(mk, GemmArgs<acc_t>{.m = rows, .n = cout, .k = cin, .a = a, .lda = cin, .b = w.tap(0),
                                 .c = scratch.first.get(), .ldc = ldc});
        epilogue_rows(act, rows, cout, scratch.first.get(), ldc, w.bias.get(), yp + p0 * cout, cout,
                      rp ? rp + p0 * cout : nullptr, cout);
      });
}

at::Tensor pointwise_conv2d_cpu(const at::Tensor& x_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                c10::string_view activation, const std::optional<at::Tensor>& residual_in) {
  const PointwiseGeometry g = check_pointwise_args(kOp, c10::DeviceType::CPU, x_in, weight, bias,
                                                   std::string_view(activation.data(), activation.size()), residual_in);
  const Activation act = g.act;
  std::optional<at::Tensor> residual;
  if (residual_in.has_value() && residual_in->defined()) {
    residual = residual_in->contiguous(at::MemoryFormat::ChannelsLast);
  }
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {g.n, g.cout, g.h, g.w});
  if (y.numel() == 0) {
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_C::pointwise_conv2d", [&] {
    pointwise_kernel<scalar_t>(x, weight, bias, act, residual, y);
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv_C, CPU, m) { m.impl(kOp, &pointwise_conv2d_cpu); }

}  // namespace fastconv::cpu

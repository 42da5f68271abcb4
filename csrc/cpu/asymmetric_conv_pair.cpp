// asymmetric_conv_pair on CPU: InceptionV3's sequential 1xn -> nx1 (or nx1 -> 1xn) convolutions, fused:
//
//   y = act(conv2(act(conv1(x) + b1)) + b2)
//
// Any odd kernels ("same" padding, stride 1), both as implicit GEMMs over zero-padded planes of rows
// (tiles.h: conv_over_plane), tiled by bands of output rows of one image. Per band, conv1 runs on the band's
// rows plus the halo conv2 needs and writes straight into the plane conv2 reads: the intermediate exists for
// one band at a time, in per-thread scratch.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/op_args.h"
#include "tiles.h"

namespace fastconv::cpu {
namespace {

constexpr const char* kOp = "asymmetric_conv_pair";

// Working set of a band. Each band recomputes conv1 on the 2 * (kh2 / 2) rows of halo conv2 needs, so bands
// span whole images unless that takes more memory than this; the GEMMs block for the caches themselves.
constexpr int64_t kBandBytes = 64 << 20;

template <typename scalar_t>
void pair_kernel(const at::Tensor& x, const at::Tensor& weight1, const std::optional<at::Tensor>& bias1,
                 const at::Tensor& weight2, const std::optional<at::Tensor>& bias2, Activation act, at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const MicroKernels<acc_t>& mk = microkernels<acc_t>();
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), w = x.size(3);
  const PackedConv<acc_t> c1 = pack_conv<acc_t, scalar_t>(weight1, bias1, mk.nr);
  const PackedConv<acc_t> c2 = pack_conv<acc_t, scalar_t>(weight2, bias2, mk.nr);
  const int64_t cout = c2.n;
  // "same" padding of each conv: rows (ph) and columns (pw).
  const int64_t ph1 = same_padding(c1.kh), ph2 = same_padding(c2.kh);
  const int64_t pw1 = same_padding(c1.kw), pw2 = same_padding(c2.kw);
  const int64_t bytes_per_row =
      ((w + pw1) * cin + (w + pw2) * c1.padded_n() + w * c2.padded_n()) * static_cast<int64_t>(sizeof(acc_t));
  const int64_t band = choose_band(h, bytes_per_row, kBandBytes);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();

  struct Buffers {
    Scratch<acc_t> x, mid, out;
  };
  for_each_band(
      n, h, band,
      [&] {
        const int64_t mid_rows = band + 2 * ph2;
        return Buffers{Scratch<acc_t>(Plane<acc_t>::elements(mid_rows + 2 * ph1, w, pw1, cin)),
                       Scratch<acc_t>(Plane<acc_t>::elements(mid_rows, w, pw2, c1.padded_n())),
                       Scratch<acc_t>(band * w * c2.padded_n())};
      },
      [&](Buffers& buf, int64_t image, int64_t first, int64_t rows) {
        // The intermediate rows conv2 reads: the band and ph2 rows each side; those inside the image, [m0, m1),
        // are computed, the others are its zero padding.
        const Plane<acc_t> mid{buf.mid.get(), rows + 2 * ph2, w, pw2, c1.padded_n(), first - ph2};
        const int64_t m0 = std::max<int64_t>(0, first - ph2), m1 = std::min(h, first + rows + ph2);
        const Plane<acc_t> xs{buf.x.get(), m1 - m0 + 2 * ph1, w, pw1, cin, m0 - ph1};
        xs.fill(xp + image * h * w * cin, h);
        mid.zero_padding(h);
        conv_over_plane(mk, xs, 0, m1 - m0, c1, mid.pixel(m0 - mid.row0, 0), mid.ld, mid.wp() * mid.ld, true, act);
        acc_t* out = buf.out.get();
        conv_over_plane(mk, mid, 0, rows, c2, out, c2.padded_n(), w * c2.padded_n());
        epilogue_rows(act, rows * w, cout, out, c2.padded_n(), c2.bias.get(),
                      yp + nhwc_offset(image, first, 0, 0, h, w, cout), cout);
      });
}

at::Tensor asymmetric_conv_pair_cpu(const at::Tensor& x_in, const at::Tensor& weight1,
                                    const std::optional<at::Tensor>& bias1, const at::Tensor& weight2,
                                    const std::optional<at::Tensor>& bias2, c10::string_view activation) {
  const AsymmetricPairGeometry g = check_asymmetric_pair_args(
      kOp, c10::DeviceType::CPU, x_in, weight1, bias1, weight2, bias2,
      std::string_view(activation.data(), activation.size()));
  const Activation act = g.act;
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = empty_channels_last(x, {g.n, g.second.cout, g.h, g.w});
  if (y.numel() == 0) {
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_C::asymmetric_conv_pair",
                                  [&] { pair_kernel<scalar_t>(x, weight1, bias1, weight2, bias2, act, y); });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv_C, CPU, m) { m.impl(kOp, &asymmetric_conv_pair_cpu); }

}  // namespace fastconv::cpu

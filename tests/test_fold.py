"""fastconv.fold: BatchNorm folding against torch.nn.utils.fusion.fuse_conv_bn_eval."""

import copy

import pytest
import torch
from module_testing import randomize_
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from fastconv.fold import fold_batch_norm, fold_conv_bn, is_foldable

# (in, out, kernel, groups, bias): a 1x1, a dense 3x3, a depthwise 3x3, a 1x7, odd channel counts.
CONVS = [
    pytest.param(16, 24, (1, 1), 1, False, id="1x1"),
    pytest.param(5, 7, (3, 3), 1, True, id="3x3-bias"),
    pytest.param(12, 12, (3, 3), 12, False, id="depthwise"),
    pytest.param(9, 11, (1, 7), 1, True, id="1x7-bias"),
]


def conv_bn(cin: int, cout: int, kernel: tuple[int, int], groups: int, bias: bool, affine: bool = True,
            seed: int = 0) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    pair = nn.Sequential(nn.Conv2d(cin, cout, kernel, groups=groups, bias=bias),
                         nn.BatchNorm2d(cout, eps=1e-3, affine=affine))
    randomize_(pair, seed).eval()
    return pair[0], pair[1]


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize(("cin", "cout", "kernel", "groups", "bias"), CONVS)
def test_matches_fuse_conv_bn_eval(cin, cout, kernel, groups, bias, affine):
    conv, bn = conv_bn(cin, cout, kernel, groups, bias, affine)
    weight, folded_bias = fold_conv_bn(conv.weight, conv.bias, bn)
    expected = fuse_conv_bn_eval(conv, bn)
    torch.testing.assert_close(weight, expected.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(folded_bias, expected.bias, rtol=1e-6, atol=1e-7)
    assert weight.dtype == folded_bias.dtype == torch.float32
    # The folded conv computes conv -> BN.
    x = torch.randn(2, cin, 9, 10)
    with torch.no_grad():
        y = nn.functional.conv2d(x, weight, folded_bias, groups=groups)
        torch.testing.assert_close(y, bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_float64_is_folded_in_float64():
    conv, bn = conv_bn(6, 8, (3, 3), 1, True)
    conv, bn = conv.double(), bn.double()
    weight, bias = fold_conv_bn(conv.weight, conv.bias, bn)
    expected = fuse_conv_bn_eval(conv, bn)
    assert weight.dtype == bias.dtype == torch.float64
    torch.testing.assert_close(weight, expected.weight, rtol=1e-14, atol=0)
    torch.testing.assert_close(bias, expected.bias, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_is_rounded_once(dtype):
    # A half-precision model folds in fp32 and rounds once: each folded value is within one unit of
    # rounding (eps * |value|) of the exact fold of its half-precision parameters.
    conv, bn = conv_bn(32, 48, (1, 1), 1, True, seed=3)
    conv, bn = conv.to(dtype), bn.to(dtype)
    expected_w, expected_b = fold_conv_bn(conv.weight.double(), conv.bias.double(), copy.deepcopy(bn).double())
    weight, bias = fold_conv_bn(conv.weight, conv.bias, bn)
    assert weight.dtype == bias.dtype == dtype
    eps = torch.finfo(dtype).eps
    for ours, exact in ((weight, expected_w), (bias, expected_b)):
        error = (ours.double() - exact).abs()
        assert (error <= eps * exact.abs() + 1e-30).all(), f"max error {error.max():.3g}"


def test_dtype_argument():
    conv, bn = conv_bn(4, 6, (1, 1), 1, False)
    weight, bias = fold_conv_bn(conv.weight, None, bn, dtype=torch.bfloat16)
    assert weight.dtype == bias.dtype == torch.bfloat16
    expected_w, expected_b = fold_conv_bn(conv.weight, None, bn)
    torch.testing.assert_close(weight, expected_w.bfloat16(), rtol=0, atol=0)
    torch.testing.assert_close(bias, expected_b.bfloat16(), rtol=0, atol=0)


def test_fold_batch_norm_without_affine_parameters():
    weight = torch.randn(3, 2, 1, 1)
    mean, var = torch.randn(3), torch.rand(3) + 0.5
    w, b = fold_batch_norm(weight, None, mean, var, 1e-5)
    torch.testing.assert_close(w, weight / torch.sqrt(var + 1e-5).reshape(3, 1, 1, 1))
    torch.testing.assert_close(b, -mean / torch.sqrt(var + 1e-5))


def test_inputs_are_unchanged():
    conv, bn = conv_bn(5, 7, (3, 3), 1, True)
    before = [t.clone() for t in (conv.weight, conv.bias, *bn.state_dict().values())]
    fold_conv_bn(conv.weight, conv.bias, bn)
    for a, b in zip((conv.weight, conv.bias, *bn.state_dict().values()), before, strict=True):
        assert torch.equal(a, b)


def test_is_foldable():
    bn = nn.BatchNorm2d(4)
    assert not is_foldable(bn), "a training-mode BatchNorm normalises with batch statistics"
    assert is_foldable(bn.eval())
    assert is_foldable(nn.SyncBatchNorm(4).eval())
    assert not is_foldable(nn.BatchNorm2d(4, track_running_stats=False).eval())
    assert not is_foldable(nn.GroupNorm(2, 4).eval())


def test_bad_input():
    conv, bn = conv_bn(4, 6, (1, 1), 1, False)
    with pytest.raises(TypeError, match=r"bn must be an nn\.BatchNorm2d or nn\.SyncBatchNorm; got GroupNorm"):
        fold_conv_bn(conv.weight, None, nn.GroupNorm(2, 6))
    with pytest.raises(ValueError, match=r"bn has no running statistics \(track_running_stats=False\)"):
        fold_conv_bn(conv.weight, None, nn.BatchNorm2d(6, track_running_stats=False))
    with pytest.raises(ValueError, match=r"running_mean must have shape \[6\] .* got \[5\]"):
        fold_conv_bn(conv.weight, None, nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match=r"bias must have shape \[6\] .* got \[4\]"):
        fold_conv_bn(conv.weight, torch.zeros(4), bn)

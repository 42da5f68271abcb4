"""InceptionV3's blocks on fastconv's fused ops: ``BasicConv2d``, ``InceptionA`` .. ``InceptionE``, ``InceptionAux``.

In eval mode, with every BatchNorm folded into its conv:
- the 1x1 convs that read the block input run as ONE ``pointwise_conv2d`` on their stacked weights, whose
  output is split into the branches by channel slices;
- the sequential 1x7 / 7x1 chains run as ``asymmetric_conv_pair`` (InceptionC, InceptionD);
- InceptionE's parallel 1x3 || 3x1 pairs run as ``asymmetric_conv_parallel``;
- the other convs run as ``F.conv2d`` on channels_last input with the ReLU applied to its output.
Training mode, and children that are not plain ``BasicConv2d`` (conv -> BatchNorm -> ReLU) of the expected
kernel shapes, run torchvision's forward. Outputs of the fused path are channels_last.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import inception

from fastconv.nn._fused import (
    FoldedConv,
    FusedModule,
    OpRunner,
    Plan,
    Stage,
    asymmetric_pair,
    asymmetric_parallel,
    is_pointwise,
    orientation,
    stage,
)

__all__ = ["BasicConv2d", "InceptionA", "InceptionAux", "InceptionB", "InceptionC", "InceptionD", "InceptionE"]


def _basic_stage(m: nn.Module) -> Stage | None:
    if not isinstance(m, inception.BasicConv2d):
        return None
    return stage(m.conv, m.bn, "relu")


class BasicConv2d(FusedModule, inception.BasicConv2d):
    """torchvision's Inception ``BasicConv2d`` (conv -> BatchNorm -> ReLU) with BatchNorm folded in eval.

    Eval mode runs a 1x1 conv as ``fastconv.pointwise_conv2d`` with fused ReLU, other kernels as
    ``F.conv2d`` on channels_last input with the folded weights.
    """

    def _first_conv(self) -> nn.Conv2d:
        return self.conv

    def _plan(self) -> Plan | None:
        s = _basic_stage(self)
        return None if s is None else ((s,),)

    def _forward_folded(self, x: Tensor, convs: Sequence[FoldedConv], run: OpRunner) -> Tensor:
        return convs[0](x, run)


class _InceptionBlock(FusedModule):
    """An Inception block whose children are ``BasicConv2d``: the plan is read from the class attributes."""

    # Names of the BasicConv2d children in the order ``_forward_folded`` receives them; the children of
    # one group are 1x1 convs that read the same input and run as one stacked conv.
    GROUPS: tuple[tuple[str, ...], ...] = ()
    # Children that run as ``asymmetric_conv_pair`` (opposite orientations) or ``asymmetric_conv_parallel``.
    PAIRS: tuple[tuple[str, str], ...] = ()
    PARALLEL: tuple[tuple[str, str], ...] = ()

    def _first_conv(self) -> nn.Conv2d:
        return getattr(self, self.GROUPS[0][0]).conv

    def _plan(self) -> Plan | None:
        stages = {name: _basic_stage(getattr(self, name)) for group in self.GROUPS for name in group}
        if None in stages.values():
            return None
        for group in self.GROUPS:
            if len(group) > 1 and not all(is_pointwise(stages[name].conv) for name in group):
                return None
        kinds = {name: orientation(stages[name].conv) for pair in self.PAIRS + self.PARALLEL for name in pair}
        if None in kinds.values() or any(kinds[a] == kinds[b] for a, b in self.PAIRS):
            return None
        return tuple(tuple(stages[name] for name in group) for group in self.GROUPS)


class InceptionA(_InceptionBlock, inception.InceptionA):
    """torchvision's ``InceptionA`` (35x35 grid): three 1x1 convs as one GEMM; 5x5 and double 3x3 branches."""

    GROUPS = (("branch1x1", "branch5x5_1", "branch3x3dbl_1"), ("branch5x5_2",), ("branch3x3dbl_2",),
              ("branch3x3dbl_3",), ("branch_pool",))

    def _forward_folded(self, x: Tensor, convs: Sequence[FoldedConv], run: OpRunner) -> Tensor:
        heads, conv5x5_2, conv3x3dbl_2, conv3x3dbl_3, conv_pool = convs
        # N x 64 x H x W, N x 48 x H x W, N x 64 x H x W
        branch1x1, branch5x5, branch3x3dbl = heads.split(x, run)
        branch5x5 = conv5x5_2(branch5x5, run)  # N x 64 x H x W
        branch3x3dbl = conv3x3dbl_3(conv3x3dbl_2(branch3x3dbl, run), run)  # N x 96 x H x W
        branch_pool = conv_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1), run)  # N x pool_f x H x W
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(_InceptionBlock, inception.InceptionB):
    """torchvision's ``InceptionB`` (35x35 -> 17x17 reduction) on folded convs."""

    GROUPS = (("branch3x3",), ("branch3x3dbl_1",), ("branch3x3dbl_2",), ("branch3x3dbl_3",))

    def _forward_folded(self, x: Tensor, convs: Sequence[FoldedConv], run: OpRunner) -> Tensor:
        conv3x3, conv3x3dbl_1, conv3x3dbl_2, conv3x3dbl_3 = convs
        branch3x3 = conv3x3(x, run)  # N x 384 x Ho x Wo
        branch3x3dbl = conv3x3dbl_3(conv3x3dbl_2(conv3x3dbl_1(x, run), run), run)  # N x 96 x Ho x Wo
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)  # N x Cin x Ho x Wo
        return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionC(_InceptionBlock, inception.InceptionC):
    """torchvision's ``InceptionC`` (17x17 grid): three 1x1 convs as one GEMM; 1x7/7x1 chains as fused pairs."""

    GROUPS = (("branch1x1", "branch7x7_1", "branch7x7dbl_1"), ("branch7x7_2",), ("branch7x7_3",),
              ("branch7x7dbl_2",), ("branch7x7dbl_3",), ("branch7x7dbl_4",), ("branch7x7dbl_5",),
              ("branch_pool",))
    PAIRS = (("branch7x7_2", "branch7x7_3"), ("branch7x7dbl_2", "branch7x7dbl_3"),
             ("branch7x7dbl_4", "branch7x7dbl_5"))

    def _forward_folded(self, x: Tensor, convs: Sequence[FoldedConv], run: OpRunner) -> Tensor:
        heads, conv7x7_2, conv7x7_3, dbl_2, dbl_3, dbl_4, dbl_5, conv_pool = convs
        # N x 192 x H x W, N x c7 x H x W, N x c7 x H x W
        branch1x1, branch7x7, branch7x7dbl = heads.split(x, run)
        branch7x7 = asymmetric_pair(branch7x7, conv7x7_2, conv7x7_3, run)  # N x 192 x H x W
        branch7x7dbl = asymmetric_pair(asymmetric_pair(branch7x7dbl, dbl_2, dbl_3, run), dbl_4, dbl_5, run)
        branch_pool = conv_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1), run)  # N x 192 x H x W
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(_InceptionBlock, inception.InceptionD):
    """torchvision's ``InceptionD`` (17x17 -> 8x8 reduction): two 1x1 convs as one GEMM; a fused 1x7/7x1 pair."""

    GROUPS = (("branch3x3_1", "branch7x7x3_1"), ("branch3x3_2",), ("branch7x7x3_2",), ("branch7x7x3_3",),
              ("branch7x7x3_4",))
    PAIRS = (("branch7x7x3_2", "branch7x7x3_3"),)

    def _forward_folded(self, x: Tensor, convs: Sequence[FoldedConv], run: OpRunner) -> Tensor:
        heads, conv3x3_2, conv7x7x3_2, conv7x7x3_3, conv7x7x3_4 = convs
        branch3x3, branch7x7x3 = heads.split(x, run)  # N x 192 x H x W each
        branch3x3 = conv3x3_2(branch3x3, run)  # N x 320 x Ho x Wo
        branch7x7x3 = asymmetric_pair(branch7x7x3, conv7x7x3_2, conv7x7x3_3, run)  # N x 192 x H x W
        branch7x7x3 = conv7x7x3_4(branch7x7x3, run)  # N x 192 x Ho x Wo
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)  # N x Cin x Ho x Wo
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class InceptionE(_InceptionBlock, inception.InceptionE):
    """torchvision's ``InceptionE`` (8x8 grid): three 1x1 convs as one GEMM; 1x3 || 3x1 as fused parallel pairs."""

    GROUPS = (("branch1x1", "branch3x3_1", "branch3x3dbl_1"), ("branch3x3_2a",), ("branch3x3_2b",),
              ("branch3x3dbl_2",), ("branch3x3dbl_3a",), ("branch3x3dbl_3b",), ("branch_pool",))
    PARALLEL = (("branch3x3_2a", "branch3x3_2b"), ("branch3x3dbl_3a", "branch3x3dbl_3b"))

    def _forward_folded(self, x: Tensor, convs: Sequence[FoldedConv], run: OpRunner) -> Tensor:
        heads, conv3x3_2a, conv3x3_2b, dbl_2, dbl_3a, dbl_3b, conv_pool = convs
        # N x 320 x H x W, N x 384 x H x W, N x 448 x H x W
        branch1x1, branch3x3, branch3x3dbl = heads.split(x, run)
        branch3x3 = asymmetric_parallel(branch3x3, conv3x3_2a, conv3x3_2b, run)  # N x 768 x H x W
        branch3x3dbl = asymmetric_parallel(dbl_2(branch3x3dbl, run), dbl_3a, dbl_3b, run)  # N x 768 x H x W
        branch_pool = conv_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1), run)  # N x 192 x H x W
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionAux(_InceptionBlock, inception.InceptionAux):
    """torchvision's ``InceptionAux`` head (used in training only by Inception3) on folded convs."""

    GROUPS = (("conv0",), ("conv1",))

    def _forward_folded(self, x: Tensor, convs: Sequence[FoldedConv], run: OpRunner) -> Tensor:
        conv0, conv1 = convs
        x = F.avg_pool2d(x, kernel_size=5, stride=3)  # N x 768 x 5 x 5
        x = conv1(conv0(x, run), run)  # N x 768 x 1 x 1
        x = F.adaptive_avg_pool2d(x, (1, 1))  # N x 768 x 1 x 1
        return self.fc(torch.flatten(x, 1))  # N x num_classes

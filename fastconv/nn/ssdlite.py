"""SSDLite's depthwise-separable prediction block on fastconv's fused ops.

torchvision's SSDLite heads (``torchvision.models.detection.ssdlite``) predict class logits and box offsets at
every feature map with a plain ``nn.Sequential``: a kxk depthwise ``Conv2dNormActivation`` (conv -> BatchNorm
-> ReLU6) and a 1x1 ``nn.Conv2d`` with bias. ``SSDLitePredictionBlock`` is that Sequential on fastconv's ops;
``fastconv.convert`` swaps it in for the blocks of ``SSDLiteClassificationHead`` and ``SSDLiteRegressionHead``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.ops import misc

from fastconv.nn._fused import (
    FoldedConv,
    FusedModule,
    OpRunner,
    Plan,
    is_depthwise,
    is_pointwise,
    sequence_stage,
    stage,
)

__all__ = ["SSDLitePredictionBlock", "is_prediction_block"]


def is_prediction_block(module: nn.Module) -> bool:
    """True for torchvision's SSDLite prediction block: ``nn.Sequential(Conv2dNormActivation, nn.Conv2d)``.

    Only a plain ``nn.Sequential`` qualifies (a subclass may change ``forward``); whether its layers are ones
    the fused ops compute exactly (depthwise, BatchNorm, ReLU6, 1x1) is decided when the block runs.
    """
    return (type(module) is nn.Sequential and len(module) == 2 and isinstance(module[0], misc.Conv2dNormActivation)
            and isinstance(module[0][0], nn.Conv2d) and isinstance(module[1], nn.Conv2d))


def _fits_inverted_residual(dw: FoldedConv) -> bool:
    """Whether ``fastconv.inverted_residual`` takes this depthwise conv: kxk, k = 3 or 5, padding k // 2."""
    k = dw.weight.shape[2]
    return (dw.weight.shape[3] == k and k in (3, 5) and dw.padding == (k // 2, k // 2) and dw.dilation == (1, 1)
            and dw.stride in ((1, 1), (2, 2)))


class SSDLitePredictionBlock(FusedModule, nn.Sequential):
    """SSDLite's prediction block, kxk depthwise conv -> BatchNorm -> ReLU6 -> 1x1 conv with bias, fused in eval.

    The layers are torchvision's (``nn.Sequential(Conv2dNormActivation(C, C, k, groups=C), nn.Conv2d(C, Cout,
    1))``), so ``state_dict`` keys are unchanged. Eval mode folds the BatchNorm into the depthwise conv and runs
    the block as one ``fastconv.inverted_residual`` without expansion stage (depthwise -> activation -> linear
    1x1 projection with the conv's bias), whose depthwise output never travels to memory; depthwise convs that
    op does not take (kernels other than 3x3 and 5x5, other paddings, dilation) run as
    ``fastconv.depthwise_conv2d`` then ``fastconv.pointwise_conv2d``. Training mode, and layers the fused ops do
    not compute exactly (other norms or activations), run the plain Sequential. Outputs of the fused path are
    channels_last.
    """

    def _first_conv(self) -> nn.Conv2d:
        return self[0][0]

    def _plan(self) -> Plan | None:
        dw = sequence_stage(list(self[0]))
        project = stage(self[1], None, "none")
        if dw is None or project is None or not is_depthwise(dw.conv) or not is_pointwise(project.conv):
            return None
        return ((dw,), (project,))

    def _forward_folded(self, x: Tensor, convs: Sequence[FoldedConv], run: OpRunner) -> Tensor:
        dw, project = convs
        if _fits_inverted_residual(dw):
            return run("inverted_residual", x, None, None, dw.weight, dw.bias, project.weight, project.bias,
                       dw.stride[0], False, dw.activation)
        return project(dw(x, run), run)  # [N, C, Ho, Wo] -> [N, Cout, Ho, Wo]

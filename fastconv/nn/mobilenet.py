"""MobileNetV2's blocks on fastconv's fused ops: ``InvertedResidual`` and ``Conv2dNormActivation``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models import mobilenetv2
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

__all__ = ["Conv2dNormActivation", "InvertedResidual"]


class Conv2dNormActivation(FusedModule, misc.Conv2dNormActivation):
    """torchvision's ``Conv2dNormActivation`` (conv -> BatchNorm -> ReLU/ReLU6) with BatchNorm folded in eval.

    Eval mode runs 1x1 convs as ``fastconv.pointwise_conv2d``, depthwise ones as
    ``fastconv.depthwise_conv2d``, and others (MobileNetV2's 3x3 stride-2 stem) as ``F.conv2d`` on
    channels_last input with the folded weights; the activation is fused into the fastconv ops. Other
    norms or activations (GroupNorm, Hardswish, ...) and training mode run torchvision's forward.
    Outputs of the fused path are channels_last.
    """

    def _first_conv(self) -> nn.Conv2d:
        return self[0]

    def _plan(self) -> Plan | None:
        s = sequence_stage(list(self))
        return None if s is None else ((s,),)

    def _forward_folded(self, x: Tensor, convs: Sequence[FoldedConv], run: OpRunner) -> Tensor:
        return convs[0](x, run)


class InvertedResidual(FusedModule, mobilenetv2.InvertedResidual):
    """torchvision's MobileNetV2 ``InvertedResidual`` running as one ``fastconv.inverted_residual`` in eval.

    1x1 expand -> BN -> ReLU6 -> 3x3 depthwise -> BN -> ReLU6 -> 1x1 projection -> BN (+ input when
    ``use_res_connect``); blocks with expansion factor 1 have no expand stage. Every BatchNorm is folded
    into its conv. Training mode, and layers the fused op does not cover (other norms, activations or
    kernel sizes), run torchvision's forward. Outputs of the fused path are channels_last.
    """

    def _first_conv(self) -> nn.Conv2d:
        return self.conv[0][0]

    def _plan(self) -> Plan | None:
        layers = list(self.conv)  # [expand]?, depthwise, projection conv, projection BN
        if len(layers) not in (3, 4) or not all(isinstance(b, nn.Sequential) for b in layers[:-2]):
            return None
        *blocks, project, project_bn = layers
        *expand, dw = (sequence_stage(list(b)) for b in blocks)
        project = stage(project, project_bn, "none")
        if dw is None or project is None or None in expand or not is_pointwise(project.conv):
            return None
        if expand and (not is_pointwise(expand[0].conv) or expand[0].activation != dw.activation):
            return None
        conv = dw.conv
        k = conv.kernel_size[0]
        if (not is_depthwise(conv) or conv.kernel_size != (k, k) or k not in (3, 5)
                or conv.padding != (k // 2, k // 2) or conv.dilation != (1, 1)
                or conv.stride not in ((1, 1), (2, 2))):
            return None
        return tuple((s,) for s in (*expand, dw, project))

    def _forward_folded(self, x: Tensor, convs: Sequence[FoldedConv], run: OpRunner) -> Tensor:
        *expand, dw, project = convs
        expand_weight, expand_bias = (expand[0].weight, expand[0].bias) if expand else (None, None)
        return run("inverted_residual", x, expand_weight, expand_bias, dw.weight, dw.bias, project.weight,
                   project.bias, dw.stride[0], self.use_res_connect, dw.activation)

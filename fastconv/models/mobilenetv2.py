"""MobileNetV2 on fastconv's fused inverted-residual blocks."""

from __future__ import annotations

from typing import Any

from torchvision.models import MobileNetV2

from fastconv.convert import convert
from fastconv.models._weights import reject_weights
from fastconv.nn import InvertedResidual

__all__ = ["mobilenet_v2"]


def mobilenet_v2(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> MobileNetV2:
    """torchvision's MobileNetV2 with fastconv's ``InvertedResidual`` and ``Conv2dNormActivation`` modules.

    The network is torchvision's ``MobileNetV2`` built with ``block=fastconv.nn.InvertedResidual``; its stem
    and last 1x1 conv are converted with ``fastconv.convert``. ``state_dict()`` keys equal torchvision's, so
    torchvision checkpoints load with ``strict=True`` (and ours into torchvision's model). Training mode
    computes exactly what torchvision computes; eval mode runs each inverted residual as one
    ``fastconv.inverted_residual`` on BatchNorm-folded weights.

    Memory format: the input may be NCHW or channels_last. In eval mode the stem converts it to
    channels_last and every block after it keeps activations channels_last; nothing is converted in
    training mode.

    Args:
        weights: must be None: no weights are downloaded (load a state_dict instead).
        progress: accepted for compatibility with torchvision; nothing is downloaded.
        **kwargs: torchvision's ``MobileNetV2`` arguments: ``num_classes``, ``width_mult``,
            ``inverted_residual_setting``, ``round_nearest``, ``block``, ``norm_layer``, ``dropout``.

    Returns:
        a ``torchvision.models.MobileNetV2`` whose blocks are fastconv modules.

    Raises:
        ValueError: ``weights`` (or ``pretrained=True``) was given.
    """
    reject_weights("mobilenet_v2", weights, kwargs)
    kwargs.setdefault("block", InvertedResidual)
    return convert(MobileNetV2(**kwargs))

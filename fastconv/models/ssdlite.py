"""SSDLite with a MobileNetV2 backbone, the object detector of the MobileNetV2 paper, on fastconv's fused ops.

Section 6.2 of the MobileNetV2 paper (Sandler et al., 2018) pairs MobileNetV2 with SSDLite, an SSD whose
prediction heads and extra layers are depthwise-separable ("MNet V2 + SSDLite": 22.1 mAP on COCO at 320x320,
4.3M parameters, 0.8B multiply-adds). torchvision ships SSDLite with MobileNetV3 only
(``torchvision.models.detection.ssdlite320_mobilenet_v3_large``); this is the same detector built from the same
torchvision components (``SSD``, ``SSDLiteHead``, ``DefaultBoxGenerator``, its transform and post-processing)
on the paper's MobileNetV2 feature maps.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import MobileNetV2, mobilenetv2
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead, _extra_block, _normal_init

from fastconv.convert import convert

__all__ = ["SIZE", "SSDLiteFeatureExtractorMobileNetV2", "dense_predictions", "ssdlite_mobilenet_v2"]

SIZE = (320, 320)  # (height, width) every image is resized to, as in the paper and torchvision's SSDLite
# Channels of the four extra blocks at width 1, each halving the resolution.
EXTRA_DEPTHS = (512, 256, 256, 128)


class SSDLiteFeatureExtractorMobileNetV2(nn.Module):
    """The six feature maps SSDLite predicts from, read off a MobileNetV2 as in the MobileNetV2 paper.

    ``features[0]`` runs MobileNetV2 up to the expansion (1x1 conv -> BatchNorm -> ReLU6) of its last stride-2
    block ("layer 15" in the paper, ``features[14]`` of torchvision's MobileNetV2): the first map, at stride 16
    with 576 channels at width 1. ``features[1]`` runs the rest of that block (3x3 depthwise stride 2 ->
    projection: an inverted residual without expansion stage) and the rest of the network up to its last 1x1
    conv: the second map, at stride 32 with 1280 channels. Four extra blocks (torchvision's SSDLite extra block:
    1x1 to half the channels -> 3x3 depthwise stride 2 -> 1x1, each with BatchNorm and ReLU6) halve the
    resolution four more times, with 512, 256, 256 and 128 channels times ``width_mult`` (at least
    ``min_depth``). At 320x320 the maps are 20x20, 10x10, 5x5, 3x3, 2x2 and 1x1.

    Args:
        backbone: a MobileNetV2 (torchvision's or fastconv's) whose last stride-2 inverted residual has an
            expansion stage; its modules are taken over, not copied (that block loses its expansion stage to
            ``features[0]``), and its classifier is not used.
        norm_layer: the norm of the extra blocks.
        width_mult: channel multiplier of the extra blocks.
        min_depth: the fewest channels an extra block has.

    Attributes:
        out_channels: channels of the six feature maps.
    """

    def __init__(
        self,
        backbone: MobileNetV2,
        norm_layer: Callable[..., nn.Module],
        width_mult: float = 1.0,
        min_depth: int = 16,
    ) -> None:
        super().__init__()
        features = backbone.features
        strided = [i for i, b in enumerate(features) if isinstance(b, mobilenetv2.InvertedResidual) and b.stride == 2]
        if not strided or len(features[strided[-1]].conv) != 4:
            raise ValueError(
                "backbone must be a MobileNetV2 whose last stride-2 inverted residual has an expansion stage "
                "(expansion factor t > 1), whose output is SSDLite's first feature map"
            )
        split = strided[-1]
        block = features[split]
        expand, *rest = block.conv  # 1x1 expand, 3x3 depthwise, 1x1 projection, its BatchNorm
        # What remains of the block is an inverted residual of expansion factor 1 (no residual: stride 2).
        block.conv = nn.Sequential(*rest)
        self.features = nn.Sequential(
            nn.Sequential(*features[:split], expand),  # [N, 3, H, W] -> [N, 576, H/16, W/16] at width 1
            nn.Sequential(*features[split:]),  # -> [N, 1280, H/32, W/32]
        )
        depths = [features[-1].out_channels, *(max(min_depth, int(d * width_mult)) for d in EXTRA_DEPTHS)]
        self.extra = nn.ModuleList(_extra_block(cin, cout, norm_layer) for cin, cout in pairwise(depths))
        _normal_init(self.extra)
        self.out_channels = [expand.out_channels, *depths]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:  # [N, 3, H, W] -> six maps, keys "0" .. "5"
        output = []
        for block in (*self.features, *self.extra):
            x = block(x)  # [N, out_channels[i], H / 2^(i + 4), W / 2^(i + 4)], sizes rounded up
            output.append(x)
        return OrderedDict((str(i), v) for i, v in enumerate(output))


def _reject_weights(weights: Any, weights_backbone: Any, kwargs: dict[str, Any]) -> None:
    """Raises when pretrained weights are asked for; drops false legacy ``pretrained*`` flags from ``kwargs``."""
    legacy = {name: kwargs.pop(name, False) for name in ("pretrained", "pretrained_backbone")}
    asked = {name: value for name, value in {"weights": weights, "weights_backbone": weights_backbone, **legacy}.items()
             if value is not None and value is not False}
    if asked:
        got = ", ".join(f"{k}={v!r}" for k, v in asked.items())
        raise ValueError(
            f"fastconv.models.ssdlite_mobilenet_v2 downloads no weights (torchvision publishes none for this "
            f"detector); got {got}. Build it with weights=None and weights_backbone=None, then load a state_dict "
            f"with model.load_state_dict(...)"
        )


def ssdlite_mobilenet_v2(
    *,
    weights: Any = None,
    progress: bool = True,
    num_classes: int = 91,
    weights_backbone: Any = None,
    width_mult: float = 1.0,
    norm_layer: Callable[..., nn.Module] | None = None,
    fused: bool = True,
    **kwargs: Any,
) -> SSD:
    """SSDLite320 with a MobileNetV2 backbone (the MobileNetV2 paper's detector), on fastconv's fused ops.

    Built like torchvision's ``ssdlite320_mobilenet_v3_large`` without pretrained weights, with MobileNetV2 in
    place of MobileNetV3: torchvision's ``SSD`` on ``SSDLiteFeatureExtractorMobileNetV2`` (six feature maps,
    20x20 to 1x1), ``SSDLiteHead`` (3x3 depthwise -> BatchNorm -> ReLU6 -> 1x1 prediction blocks),
    ``DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)`` (six default boxes per location),
    images resized to 320x320 and scaled from [0, 1] to [-1, 1], BatchNorm with eps 0.001 and momentum 0.03,
    convs initialised from N(0, 0.03), and the post-processing defaults score_thresh 0.001, nms_thresh 0.55,
    detections_per_img 300, topk_candidates 300. Then ``fastconv.convert`` makes every block a fastconv
    module: in eval mode the inverted residuals run ``inverted_residual``, the 1x1 convs ``pointwise_conv2d``
    and the extra blocks' depthwise convs ``depthwise_conv2d`` (the stem runs ``F.conv2d``), the prediction
    blocks one ``inverted_residual`` each without expansion stage, all on BatchNorm-folded weights and
    channels_last activations. Training mode computes what torchvision's modules compute, so the detector
    trains with torchvision's SSD losses.

    With 91 classes it has 4.66M parameters and takes 0.870B multiply-adds at 320x320, against the paper's
    4.3M and 0.8B: torchvision's default boxes are six per location on every map, where the paper's
    implementation has three on the 20x20 map (which would make 4.50M and 0.804B).

    As in torchvision, the input is a list of [3, H, W] float images in [0, 1]; eval mode returns one dict per
    image with ``boxes`` [D, 4] (x1, y1, x2, y2 in the image's pixels), ``scores`` [D] and ``labels`` [D];
    training mode takes ``targets`` and returns the losses ``bbox_regression`` and ``classification``.

    Args:
        weights: must be None: no weights are downloaded (load a state_dict instead).
        progress: accepted for compatibility with torchvision's builders; nothing is downloaded.
        num_classes: classes including the background (91: COCO's 90 and the background).
        weights_backbone: must be None, as ``weights``.
        width_mult: MobileNetV2's width multiplier, which scales the extra blocks too.
        norm_layer: the norm of every block (default ``partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)``).
        fused: False leaves torchvision's modules in place: the same network (same ``state_dict`` keys) in
            plain PyTorch, e.g. as the baseline fastconv is measured against.
        **kwargs: torchvision's ``SSD`` arguments: ``score_thresh``, ``nms_thresh``, ``detections_per_img``,
            ``topk_candidates``, ``iou_thresh``, ``positive_fraction``, ``image_mean``, ``image_std``.

    Returns:
        a ``torchvision.models.detection.ssd.SSD`` whose blocks are fastconv modules (when ``fused``).

    Raises:
        ValueError: weights were asked for, ``num_classes`` < 2, ``width_mult`` <= 0, or ``size`` was given
            (the input size is fixed at 320x320).
    """
    _reject_weights(weights, weights_backbone, kwargs)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an int >= 2 (the background and at least one class); got {num_classes!r}"
        )
    if not width_mult > 0:
        raise ValueError(f"width_mult must be a positive number; got {width_mult!r}")
    if "size" in kwargs:
        raise ValueError(f"size is fixed at {SIZE[0]}x{SIZE[1]} for SSDLite320; got size={kwargs['size']!r}")
    if norm_layer is None:
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)

    mobilenet = MobileNetV2(width_mult=width_mult, norm_layer=norm_layer)
    _normal_init(mobilenet)
    backbone = SSDLiteFeatureExtractorMobileNetV2(mobilenet, norm_layer, width_mult)
    anchor_generator = DefaultBoxGenerator([[2, 3] for _ in backbone.out_channels], min_ratio=0.2, max_ratio=0.95)
    head = SSDLiteHead(backbone.out_channels, anchor_generator.num_anchors_per_location(), num_classes, norm_layer)
    defaults = {
        "score_thresh": 0.001,
        "nms_thresh": 0.55,
        "detections_per_img": 300,
        "topk_candidates": 300,
        # From [0, 1] to [-1, 1], MobileNet's input range.
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    model = SSD(backbone, anchor_generator, SIZE, num_classes, head=head, **{**defaults, **kwargs})
    return convert(model) if fused else model


def dense_predictions(model: SSD, images: Sequence[Tensor]) -> Tensor:
    """An SSD's predictions at every default box, before decoding, score threshold, top-k and NMS.

    Detections are discontinuous in these: two runs whose predictions differ by rounding can keep different
    boxes where a score sits at a threshold or two boxes at the NMS overlap. Numerical comparisons (of backends,
    dtypes, or against a reference) therefore compare these.

    Args:
        model: an SSD (e.g. ``ssdlite_mobilenet_v2()``); its mode decides its BatchNorms'.
        images: [3, H, W] float images in [0, 1], or a [N, 3, H, W] batch of them.

    Returns:
        [N, default boxes, 4 + num_classes]: the box regression (dx, dy, dw, dh against each default box) then
        the class logits, the background's first.
    """
    batch, _ = model.transform(list(images))
    features = list(model.backbone(batch.tensors).values())
    head = model.head(features)
    return torch.cat([head["bbox_regression"], head["cls_logits"]], dim=-1)

"""SSDLite on MobileNetV2 (fastconv.models.ssdlite_mobilenet_v2) and convert() on torchvision's SSDLite.

Detections are discontinuous functions of the network's outputs: a score at the score threshold, two boxes at
the NMS overlap, or two overlapping boxes of equal score make two runs that differ by rounding keep different
boxes. The comparisons therefore hold the dense predictions (box regression and class logits at every default
box) to the tolerance rule against an fp64 oracle, and compare detections only under post-processing settings
whose every decision is the same for any run within that tolerance of the oracle: ``certain_post_processing``
proves this by bounding each score and each box overlap over all such runs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from functools import partial
from itertools import pairwise

import pytest
import torch
import torchvision
from module_testing import CHANNELS_LAST, check_eval, module_backends, one_thread, randomize_
from op_testing import FLOAT32, Tolerance, assert_within_tolerance
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection.ssd import SSD
from torchvision.ops import clip_boxes_to_image

import fastconv
import fastconv.models
from fastconv import nn as fnn
from fastconv.convert import convert
from fastconv.models.ssdlite import SIZE, SSDLiteFeatureExtractorMobileNetV2, dense_predictions
from fastconv.nn._fused import FusedModule

BACKENDS = module_backends()
CPU_BACKEND = [p for p in BACKENDS if p.id == "cpu"]
# SSDLite's six feature maps at 320x320 and their channels at width 1 (the MobileNetV2 paper, section 6.2).
FEATURE_SIZES = (20, 10, 5, 3, 2, 1)
CHANNELS = (576, 1280, 512, 256, 256, 128)
ANCHORS_PER_LOCATION = 6
# The MobileNetV2 paper's "MNet V2 + SSDLite" row (Table 6), for the size report.
PAPER_PARAMS, PAPER_MADDS = 4.3e6, 0.8e9
# The tolerance rule for a whole detector in float32: the float32 rule plus twice PyTorch's own float32 error on
# the same network, as for half precision. Random layers amplify rounding: on the inputs here torchvision's own
# float32 SSDLite on MobileNetV3 errs by 2.6e-3 at a scale of 9 against float64, past the 1e-4 rule alone.
DETECTOR_FLOAT32 = Tolerance(torch.float32, FLOAT32.atol, factor=2.0)
# Added to every bound on a log-score or an IoU: a float32 run rounds the softmax and the overlaps it compares.
ROUNDING = 1e-5


def build(seed: int = 0, **kwargs) -> tuple[SSD, SSD]:
    """(fastconv's detector, the same of torchvision's modules alone) in eval mode, with the same random
    weights, BatchNorm statistics and affine parameters."""
    plain = randomize_(fastconv.models.ssdlite_mobilenet_v2(fused=False, **kwargs), seed)
    model = fastconv.models.ssdlite_mobilenet_v2(**kwargs)
    model.load_state_dict(plain.state_dict())
    return model.eval(), plain.eval()


def images(batch: int, size: tuple[int, int] = SIZE, seed: int = 1) -> list[Tensor]:
    """Random [3, H, W] images in [0, 1]. At 320x320 the detector's transform only normalises them, so its
    float32 and float64 runs see the same input (a float32 resize differs from float64 by 2e-5, which the
    random network amplifies 300-fold)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, *size, generator=g) for _ in range(batch)]


# ----------------------------------------------------------------------------------------------------------
# Running a detector and comparing its outputs.


@dataclasses.dataclass
class Run:
    """One eval forward pass of an SSD: its dense predictions, default boxes and detections."""

    dense: Tensor  # [N, default boxes, 4 + num_classes]: box regression, then class logits
    anchors: list[Tensor]  # per image, [default boxes, 4] (x1, y1, x2, y2)
    detections: list[dict[str, Tensor]]


def run(model: SSD, batch: list[Tensor], backend: str) -> Run:
    """``model(batch)`` on ``backend``, with the head's outputs and the default boxes it used.

    On one thread, as every forward pass here: on two shared cores, multithreaded CPU ops stall for whole
    scheduler slices when other processes compete (see ``one_thread``), which made a pass 10 times slower.
    """
    seen = {}
    hooks = [model.head.register_forward_hook(lambda m, args, out: seen.update(head=out)),
             model.anchor_generator.register_forward_hook(lambda m, args, out: seen.update(anchors=out))]
    try:
        before = [image.clone() for image in batch]
        with torch.no_grad(), fastconv.use_backend(backend), one_thread():
            detections = model(batch)
        assert all(torch.equal(a, b) for a, b in zip(batch, before, strict=True)), "the input was changed"
    finally:
        for hook in hooks:
            hook.remove()
    dense = torch.cat([seen["head"]["bbox_regression"], seen["head"]["cls_logits"]], dim=-1)
    return Run(dense, seen["anchors"], detections)


def oracle_run(network: SSD, batch: list[Tensor]) -> Run:
    """``network`` in float64 on a copy, on the reference backend: the oracle of the tolerance rule."""
    model = copy.deepcopy(network).double()
    model.score_thresh = 1.0  # only its dense predictions are needed: no score exceeds 1, so NMS has nothing to do
    return run(model, [image.double() for image in batch], "reference")


def _log_score_bounds(logits: Tensor, e: float) -> tuple[Tensor, Tensor]:
    """Least and greatest foreground log-softmax scores of any run whose logits are within ``e`` of ``logits``.

    log s_k = -log(1 + R) with R = sum_{j != k} exp(z_j - z_k), and each z_j - z_k moves by at most 2e.
    """
    rest = torch.expm1(-logits.log_softmax(-1)[..., 1:])  # R, [..., K - 1]
    return -torch.log1p(rest * math.exp(2 * e)) - ROUNDING, -torch.log1p(rest * math.exp(-2 * e)) + ROUNDING


def _boxes_and_slack(model: SSD, regression: Tensor, anchors: Tensor, e: float) -> tuple[Tensor, Tensor]:
    """The clipped decoded boxes [A, 4] and, per box [A], how far any coordinate of a run whose regression is
    within ``e`` of ``regression`` can lie from them (clipping to the image moves coordinates no further)."""
    boxes = model.box_coder.decode_single(regression, anchors)  # [A, 4]
    wx, wy, ww, wh = model.box_coder.weights
    size = anchors[:, 2:] - anchors[:, :2]  # default box width, height
    pred = boxes[:, 2:] - boxes[:, :2]  # decoded width, height
    # centre: e / wx * anchor width; corner from centre: half the width, scaled by at most exp(e / ww)
    slack = e / torch.tensor([wx, wy]) * size + pred * torch.expm1(e / torch.tensor([ww, wh])) / 2
    return clip_boxes_to_image(boxes, SIZE), slack.amax(-1) + 1e-3  # + the rounding of a float32 decode


def _iou_bounds(boxes: Tensor, slack: Tensor) -> tuple[Tensor, Tensor]:
    """Least and greatest IoU [n, n] of every pair of boxes [n, 4] whose coordinates move by up to ``slack``."""
    grow = torch.stack([-slack, -slack, slack, slack], dim=1)
    outer, inner = boxes + grow, boxes - grow

    def intersection(b: Tensor) -> Tensor:
        corners = torch.min(b[:, None, 2:], b[None, :, 2:]) - torch.max(b[:, None, :2], b[None, :, :2])
        return corners.clamp(min=0).prod(-1)

    def area(b: Tensor) -> Tensor:
        return (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)

    # IoU = I / (A + B - I): least with the inner boxes' overlap and the outer boxes' areas, greatest the other way.
    least_i, most_i = intersection(inner), intersection(outer)
    least = least_i / (area(outer)[:, None] + area(outer)[None, :] - least_i)
    least_union = area(inner)[:, None] + area(inner)[None, :] - most_i
    most = torch.where(least_union > 0, most_i / least_union.clamp(min=1e-12), 1.0)
    return least - ROUNDING, most + ROUNDING


@dataclasses.dataclass(frozen=True)
class CertainPostProcessing:
    """A score threshold under which post-processing decides alike for every run within a tolerance of the
    oracle, and how far apart two such runs' detections can then lie."""

    score_thresh: float
    box_tol: float  # pixels, any coordinate
    score_tol: float


def certain_post_processing(model: SSD, oracle: Run, e: float, counts: range = range(20, 200)) -> CertainPostProcessing:
    """Post-processing settings under which every decision of ``model`` is the oracle's for any run whose dense
    predictions are within ``e`` of the oracle's.

    The threshold keeps the ``n`` best-scoring candidates, the most that ``counts`` allows with both conditions
    met (fewer than the top-k and detections-per-image limits, so neither cuts):
    - no score of such a run crosses it: the n-th score's least bound is above the next one's greatest;
    - NMS decides alike. Greedy NMS depends only on which pairs of a class overlap more than ``nms_thresh``
      and, for those, on which of the two scores higher: neither may change within the bounds.
    """
    assert counts.stop <= min(model.topk_candidates, model.detections_per_img)
    scores = oracle.dense[..., 4:].log_softmax(-1)[..., 1:]  # [N, A, K - 1], the background left out
    image, anchor, label = torch.unravel_index(scores.flatten().argsort(descending=True)[:counts.stop],
                                               scores.shape)
    # Both bounds grow with the score, so they sort like it.
    least, most = (bound[image, anchor, label] for bound in _log_score_bounds(oracle.dense[..., 4:], e))
    decoded = [_boxes_and_slack(model, oracle.dense[i, :, :4], a, e) for i, a in enumerate(oracle.anchors)]
    boxes, slack = (torch.stack(parts)[image, anchor] for parts in zip(*decoded, strict=True))
    least_iou, most_iou = _iou_bounds(boxes, slack)
    t = model.nms_thresh
    same_class = (image[:, None] == image) & (label[:, None] == label) & ~torch.eye(len(label), dtype=torch.bool)
    overlap_unsure = (least_iou <= t) & (most_iou > t)
    order_unsure = (least_iou > t) & (least[:, None] <= most) & (least <= most[:, None])
    unsure = (same_class & (overlap_unsure | order_unsure)).nonzero()
    # NMS of the n best is certain while no unsure pair is among them.
    limit = int(unsure.amax(1).min()) if len(unsure) else counts.stop - 1
    for n in reversed(range(counts.start, min(limit, counts.stop - 1) + 1)):
        if least[n - 1] > most[n]:
            return CertainPostProcessing(
                score_thresh=math.exp((least[n - 1] + most[n]).item() / 2),
                box_tol=2 * slack[:n].max().item(),  # each run's box lies within its slack of the oracle's
                score_tol=(most[:n].exp() - least[:n].exp()).max().item(),
            )
    raise AssertionError(f"no score threshold keeping {counts.start} to {counts.stop - 1} candidates makes "
                         "every post-processing decision certain: choose another input seed")


def check_detections_match(ours: list[dict[str, Tensor]], expected: list[dict[str, Tensor]],
                           certain: CertainPostProcessing) -> None:
    """The same detections: labels equal, each box paired with the other run's nearest box of its label (the
    largest coordinate difference decides), boxes and scores within ``certain``'s bounds."""
    assert len(ours) == len(expected)
    for a, b in zip(ours, expected, strict=True):
        assert a["boxes"].dtype == torch.float32 and a["labels"].dtype == torch.int64
        assert torch.equal(a["labels"].sort().values, b["labels"].sort().values), "different labels were detected"
        for label in b["labels"].unique():
            ia, ib = (a["labels"] == label).nonzero()[:, 0], (b["labels"] == label).nonzero()[:, 0]
            match = ib[torch.cdist(a["boxes"][ia], b["boxes"][ib], p=math.inf).argmin(1)]
            assert sorted(match.tolist()) == ib.tolist(), f"the boxes of label {label} do not pair up"
            box_error = (a["boxes"][ia] - b["boxes"][match]).abs().max().item()
            score_error = (a["scores"][ia] - b["scores"][match]).abs().max().item()
            assert box_error <= certain.box_tol, f"label {label}: boxes differ by {box_error:.3g} > {certain}"
            assert score_error <= certain.score_tol, f"label {label}: scores differ by {score_error:.3g} > {certain}"


def check_detector(ours: SSD, reference: SSD, plain: SSD, batch: list[Tensor], backend: str) -> None:
    """``ours`` on ``backend`` detects what ``reference`` (same weights, float32) does on the reference backend.

    Both runs' dense predictions are held to the tolerance rule (``DETECTOR_FLOAT32``) against ``plain`` (the
    same network of torchvision's modules alone) computed in float64; under the post-processing settings
    ``certain_post_processing`` finds for that tolerance, their detections must then match.
    """
    oracle = oracle_run(plain, batch)
    with torch.no_grad(), one_thread():
        torch_own = dense_predictions(plain, batch)  # PyTorch's own float32 path: plain has no fastconv module
        tol = DETECTOR_FLOAT32
        e = (tol.atol * max(1.0, oracle.dense.abs().max().item())
             + tol.factor * (torch_own - oracle.dense).abs().max().item())
        certain = certain_post_processing(reference, oracle, e)
    for model in (ours, reference):
        model.score_thresh = certain.score_thresh
    expected = run(reference, batch, "reference")
    got = run(ours, batch, backend)
    for result in (got, expected):
        assert_within_tolerance(result.dense, oracle.dense, tol, lambda: torch_own)
    assert all(len(d["labels"]) for d in expected.detections), "an image without detections tests nothing"
    check_detections_match(got.detections, expected.detections, certain)


# ----------------------------------------------------------------------------------------------------------
# fastconv.models.ssdlite_mobilenet_v2


@pytest.mark.parametrize("backend", CPU_BACKEND)
def test_eval_matches_reference_backend(backend):
    model, plain = build()
    check_detector(model, model, plain, images(2, seed=2), backend)


def test_dense_predictions_are_the_heads_outputs():
    model, _ = build(num_classes=5, width_mult=0.5)
    batch = images(1, size=(240, 400))  # resized to 320x320
    with torch.no_grad(), fastconv.use_backend("reference"), one_thread():
        dense = dense_predictions(model, batch)
    torch.testing.assert_close(dense, run(model, batch, "reference").dense, rtol=0, atol=0)


def test_architecture():
    model, _ = build()
    backbone = model.backbone
    assert isinstance(backbone, SSDLiteFeatureExtractorMobileNetV2)
    assert backbone.out_channels == list(CHANNELS)
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, *SIZE))
    assert [tuple(f.shape[1:]) for f in features.values()] == [(c, s, s) for c, s in zip(CHANNELS, FEATURE_SIZES,
                                                                                          strict=True)]
    assert all(f.is_contiguous(memory_format=CHANNELS_LAST) for f in features.values())
    # The first map is the expansion of the last stride-2 block; the rest of that block runs fused, without
    # expansion stage, and so does every block of the backbone.
    first, second = backbone.features
    assert isinstance(first[-1], fnn.Conv2dNormActivation) and first[-1][0].kernel_size == (1, 1)
    assert isinstance(second[0], fnn.InvertedResidual) and second[0].stride == 2 and len(second[0].conv) == 3
    assert sum(isinstance(m, fnn.InvertedResidual) for m in backbone.modules()) == 17
    blocks = [b for head in (model.head.classification_head, model.head.regression_head) for b in head.module_list]
    assert len(blocks) == 12 and all(type(b) is fnn.SSDLitePredictionBlock for b in blocks)
    assert model.anchor_generator.num_anchors_per_location() == [ANCHORS_PER_LOCATION] * 6
    assert (model.score_thresh, model.nms_thresh, model.detections_per_img, model.topk_candidates) == (
        0.001, 0.55, 300, 300)
    assert model.transform.image_mean == [0.5] * 3 and model.transform.fixed_size == SIZE
    assert all(m.eps == 0.001 and m.momentum == 0.03 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_width_mult_and_num_classes():
    model, _ = build(width_mult=0.5, num_classes=7)
    # MobileNetV2 at width 0.5: 48 channels expand to 288; the last conv keeps 1280; the extra blocks halve.
    assert model.backbone.out_channels == [288, 1280, 256, 128, 128, 64]
    assert model.head.classification_head.module_list[0][1].out_channels == 7 * ANCHORS_PER_LOCATION


def test_unfused_detector_has_the_same_state_dict():
    fused, plain = build(seed=3)
    assert not any(isinstance(m, FusedModule) for m in plain.modules())
    assert list(plain.state_dict()) == list(fused.state_dict())
    fresh = fastconv.models.ssdlite_mobilenet_v2()
    fresh.load_state_dict(plain.state_dict(), strict=True)
    torch.testing.assert_close(fresh.state_dict(), fused.state_dict(), rtol=0, atol=0)


def test_training_is_plain_pytorch_and_reduces_the_loss():
    model, plain = (m.train() for m in build(num_classes=4, width_mult=0.5))
    batch = images(2, size=(160, 160))
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0], [60.0, 50.0, 150.0, 140.0]]),
                "labels": torch.tensor([1, 3])},
               {"boxes": torch.tensor([[30.0, 30.0, 120.0, 90.0]]), "labels": torch.tensor([2])}]
    losses = []
    with one_thread():
        # One forward and backward pass side by side: the losses, gradients and BatchNorm statistics of plain
        # PyTorch.
        for m in (model, plain):
            loss = m(batch, targets)
            assert set(loss) == {"bbox_regression", "classification"}
            sum(loss.values()).backward()
            losses.append(loss)
        torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
        grads = [{k: p.grad for k, p in m.named_parameters()} for m in (model, plain)]
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
        torch.testing.assert_close(model.state_dict(), plain.state_dict(), rtol=0, atol=0)
        # A few more steps on the same batch fit it better.
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        totals = []
        for _ in range(4):
            optimizer.step()
            optimizer.zero_grad()
            totals.append(sum(model(batch, targets).values()))
            totals[-1].backward()
    assert totals[-1].item() < 0.8 * sum(losses[0].values()).item(), [t.item() for t in totals]


def test_size_report(capsys):
    """Parameters and multiply-adds at 320x320 are those of the architecture, counted independently:
    torchvision's MobileNetV2 features, then the extra and prediction blocks from their shapes."""
    num_classes = 91
    with torch.device("meta"):
        model = fastconv.models.ssdlite_mobilenet_v2(num_classes=num_classes, fused=False).eval()
        mobilenet = torchvision.models.mobilenet_v2(norm_layer=nn.BatchNorm2d).features
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            features = list(model.backbone(torch.empty(1, 3, *SIZE)).values())
            model.head(features)
        with FlopCounterMode(display=False) as mobilenet_counter, torch.no_grad():
            mobilenet(torch.empty(1, 3, *SIZE))
    params = sum(p.numel() for p in model.parameters())
    madds = counter.get_total_flops() // 2

    def conv(cin: int, cout: int, k: int = 1, groups: int = 1, bn: bool = True, bias: bool = False) -> int:
        return cout * cin // groups * k * k + 2 * cout * bn + cout * bias

    expected_params = sum(p.numel() for p in mobilenet.parameters())
    expected_madds = mobilenet_counter.get_total_flops() // 2
    # Extra blocks: 1x1 to half the channels, 3x3 depthwise stride 2, 1x1.
    for (cin, cout), (size_in, size_out) in zip(pairwise(CHANNELS[1:]), pairwise(FEATURE_SIZES[1:]), strict=True):
        mid = cout // 2
        expected_params += conv(cin, mid) + conv(mid, mid, 3, mid) + conv(mid, cout)
        expected_madds += size_in**2 * cin * mid + size_out**2 * (mid * 9 + mid * cout)
    for c, size in zip(CHANNELS, FEATURE_SIZES, strict=True):  # 3x3 dw + BN, then 1x1 with bias, per head
        for cout in (num_classes * ANCHORS_PER_LOCATION, 4 * ANCHORS_PER_LOCATION):
            expected_params += conv(c, c, 3, c) + conv(c, cout, bn=False, bias=True)
            expected_madds += size**2 * (c * 9 + c * cout)
    assert (params, madds) == (expected_params, expected_madds)
    with capsys.disabled():
        print(f"\nSSDLite320 on MobileNetV2, {num_classes} classes: {params / 1e6:.2f}M parameters "
              f"({params / PAPER_PARAMS:.2f}x the paper's 4.3M), {madds / 1e9:.3f}B multiply-adds at 320x320 "
              f"({madds / PAPER_MADDS:.2f}x the paper's 0.8B)")


@pytest.mark.parametrize("kwargs", [{"weights": "COCO_V1"}, {"weights_backbone": "IMAGENET1K_V1"},
                                    {"pretrained": True}, {"pretrained_backbone": True}], ids=str)
def test_weights_are_not_downloaded(kwargs):
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=rf"ssdlite_mobilenet_v2 downloads no weights.*got {name}={value!r}.*"
                                         r"load a state_dict"):
        fastconv.models.ssdlite_mobilenet_v2(**kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"num_classes": 1}, r"num_classes must be an int >= 2 .*got 1"),
    ({"num_classes": 2.0}, r"num_classes must be an int >= 2 .*got 2.0"),
    ({"width_mult": 0}, r"width_mult must be a positive number; got 0"),
    ({"size": (300, 300)}, r"size is fixed at 320x320 for SSDLite320; got size=\(300, 300\)"),
])
def test_bad_builder_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fastconv.models.ssdlite_mobilenet_v2(**kwargs)


def test_bad_input():
    model, _ = build(num_classes=3, width_mult=0.35)
    with pytest.raises(ValueError, match=r"Conv2dNormActivation expects an input of its parameters' dtype "
                                         r"torch.float32; got torch.float64"):
        model([image.double() for image in images(1)])
    block = model.head.classification_head.module_list[0]
    with pytest.raises(ValueError, match=rf"SSDLitePredictionBlock expects {block[0][0].in_channels} input "
                                         r"channels \[N, \d+, H, W\]; got shape \[1, 5, 20, 20\]"):
        block(torch.randn(1, 5, 20, 20))
    plain_mobilenet = torchvision.models.mobilenet_v2(inverted_residual_setting=[[1, 16, 1, 2], [6, 24, 1, 1]])
    with pytest.raises(ValueError, match=r"last stride-2 inverted residual has an expansion stage"):
        SSDLiteFeatureExtractorMobileNetV2(plain_mobilenet, nn.BatchNorm2d)


# ----------------------------------------------------------------------------------------------------------
# fastconv.nn.SSDLitePredictionBlock


class _OpsCalled(TorchDispatchMode):
    """Records the fastconv ops that run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fastconv":
            self.ops.add(func._opname)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("kernel_size", "activation", "ops"), [
    (3, nn.ReLU6, {"inverted_residual"}),  # SSDLite's own: one fused op
    (7, nn.ReLU6, {"depthwise_conv2d", "pointwise_conv2d"}),  # a kernel inverted_residual does not take
    (3, nn.Hardswish, set()),  # no fastconv activation: the plain Sequential runs
], ids=["3x3", "7x7", "hardswish"])
def test_prediction_block(kernel_size, activation, ops, backend):
    norm = partial(nn.BatchNorm2d, eps=0.001)
    reference = randomize_(torchvision.models.detection.ssdlite._prediction_block(24, 30, kernel_size, norm), seed=4)
    reference[0][2] = activation()
    block = fnn.SSDLitePredictionBlock(*copy.deepcopy(reference))
    assert list(block.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 24, 11, 9)
    with _OpsCalled() as called:
        out = check_eval(block.eval(), reference.eval(), x, backend)
    assert called.ops == ops
    assert not ops or out.is_contiguous(memory_format=CHANNELS_LAST)


# ----------------------------------------------------------------------------------------------------------
# fastconv.convert on torchvision's SSDLite (MobileNetV3 backbone)


def calibrate_batchnorm_(model: SSD, batch: list[Tensor]) -> SSD:
    """Sets every BatchNorm's running statistics to those of ``batch`` through ``model`` (its other parameters
    stay as they are), and puts ``model`` in eval mode.

    Activations then keep about unit scale through a random network, as through a trained one. With the
    random statistics of ``randomize_`` alone, MobileNetV3's hard-swish lets them grow past 2000, and float32
    rounding amplified by the random layers leaves too few reliable digits in the logits to compare.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: after one batch, that batch's statistics
    with torch.no_grad():
        dense_predictions(model.train(), batch)
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    return model.eval()


@pytest.fixture(scope="module")
def torchvision_ssdlite() -> SSD:
    """torchvision's SSDLite320 on MobileNetV3 with random weights, eval mode."""
    with one_thread():  # the builder runs the network once, to read its channels
        model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
        return calibrate_batchnorm_(randomize_(model, seed=2), images(2, seed=10))


@pytest.mark.parametrize("backend", BACKENDS)
def test_convert_torchvision_ssdlite(torchvision_ssdlite, backend):
    reference = copy.deepcopy(torchvision_ssdlite)
    model = copy.deepcopy(reference)
    tensors = model.state_dict(keep_vars=True)
    assert convert(model) is model
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(tensors) and all(after[k] is t for k, t in tensors.items())
    blocks = [b for head in (model.head.classification_head, model.head.regression_head) for b in head.module_list]
    assert len(blocks) == 12 and all(type(b) is fnn.SSDLitePredictionBlock for b in blocks)
    check_detector(model, reference, reference, images(2, seed=5), backend)


def test_convert_leaves_other_sequentials_alone():
    head = torchvision.models.detection.ssdlite.SSDLiteRegressionHead([8, 16], [2, 2], nn.BatchNorm2d)
    head.module_list.append(nn.Sequential(nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 1)))  # no Conv2dNormActivation
    elsewhere = nn.Sequential(copy.deepcopy(head.module_list[0]))  # a prediction block outside a head
    convert(nn.ModuleList([head, elsewhere]))
    assert [type(b) for b in head.module_list] == [fnn.SSDLitePredictionBlock] * 2 + [nn.Sequential]
    assert type(elsewhere[0]) is nn.Sequential and type(elsewhere[0][0]) is fnn.Conv2dNormActivation
    assert convert(head) is head and type(head.module_list[0]) is fnn.SSDLitePredictionBlock

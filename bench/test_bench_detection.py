"""Benchmarks of the SSDLite320 detector on MobileNetV2 (``fastconv.models.ssdlite_mobilenet_v2``) at batch 1.

One benchmark group, ``network ssdlite_mobilenet_v2 b1``: a whole detector forward pass (a list of one 320x320
image in, boxes, scores and labels out) in eval mode under no_grad, on

- each fastconv backend that runs here (``fastconv-cpu``; ``fastconv-triton``, ``fastconv-cuda``);
- ``eager-reference``: the same detector object on fastconv's reference backend, PyTorch's eager ops on the
  same BatchNorm-folded weights and channels_last activations;
- ``eager-nchw`` and ``eager-channels_last``: the same network of torchvision's modules alone
  (``ssdlite_mobilenet_v2(fused=False)``, same weights), when the "eager" baselines are on.

Weights are the builder's (N(0, 0.03)) with random BatchNorm statistics, so every class scores about 1/91.
At torchvision's score threshold of 0.001 all 300 top-k candidates of each of the 90 classes would go through
NMS, seconds on a CPU and the same work in every variant; the benchmark's threshold of 0.5 keeps none, so the
times are those of the network, the default boxes, the box decoding and the post-processing loop. The results
sit in the report's networks section and record what the other benchmarks record (``extra_info``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import pytest
import torch
from conftest import SEED, SETTINGS, VARIANTS, Ceiling, Settings, Variant, run_benchmark
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection.ssd import SSD

from fastconv.models.ssdlite import SIZE, dense_predictions, ssdlite_mobilenet_v2
from fastconv.testing import randomize_batchnorm_

DETECTOR = "ssdlite_mobilenet_v2"
BATCH = 1
# No random score reaches it: see the module docstring.
DETECTOR_KWARGS = {"score_thresh": 0.5}
# The ops the fused detector runs in eval mode: a backend that lacks one is skipped.
OPS = ("inverted_residual", "pointwise_conv2d", "depthwise_conv2d")
REFERENCE = Variant("eager-reference", "baseline", torch.channels_last, "reference", family="eager",
                    scopes=("network",))


def _variants(settings: Settings) -> list[Variant]:
    """fastconv's backends for this device, then the eager baselines (when switched on)."""
    fast = [v for v in VARIANTS.values() if v.kind == "fastconv" and v.family == "fastconv"
            and settings.device.type in v.device_types]
    eager = [REFERENCE, *(v for v in VARIANTS.values() if v.kind == "baseline" and v.family == "eager")]
    return fast + (eager if "eager" in settings.families else [])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash[SETTINGS]
    params = []
    for variant in _variants(settings):
        marks = [pytest.mark.benchmark(group=f"network {DETECTOR} b{BATCH}")]
        reason = variant.why_not(OPS, settings.device)
        if reason is not None:
            marks.append(pytest.mark.skip(reason=f"{variant.name}: {reason}"))
        params.append(pytest.param(variant.name, marks=marks, id=f"{DETECTOR}-b{BATCH}-{variant.name}"))
    metafunc.parametrize("variant", params)


@dataclasses.dataclass
class Detectors:
    """The fused detector and its unfused twin by memory format, same weights, and what one image costs.

    Attributes:
        fast: ``ssdlite_mobilenet_v2()``, fastconv modules.
        eager: ``ssdlite_mobilenet_v2(fused=False)`` by memory format of its conv weights.
        flops: FLOPs of the network on one image (2 x multiply-adds of its convs).
        min_bytes: the folded weights and biases, the image and the head's predictions, each moved once.
    """

    fast: SSD
    eager: dict[torch.memory_format, SSD]
    flops: int
    min_bytes: int


@functools.lru_cache(maxsize=1)  # the variants run back to back
def _detectors(dtype: torch.dtype, device: torch.device) -> Detectors:
    torch.manual_seed(SEED)
    fast = ssdlite_mobilenet_v2(**DETECTOR_KWARGS)
    randomize_batchnorm_(fast, torch.Generator().manual_seed(SEED))
    eager = ssdlite_mobilenet_v2(fused=False, **DETECTOR_KWARGS)
    eager.load_state_dict(fast.state_dict())
    eager = eager.to(device=device, dtype=dtype).eval()
    with torch.device("meta"):
        meta = ssdlite_mobilenet_v2(fused=False).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            predictions = dense_predictions(meta, [torch.empty(3, *SIZE)])
    # A folded conv keeps its weight and has a bias per output channel.
    elements = sum(m.weight.numel() + m.weight.shape[0] for m in meta.modules() if isinstance(m, nn.Conv2d))
    elements += 3 * SIZE[0] * SIZE[1] + predictions.numel()
    return Detectors(
        fast.to(device=device, dtype=dtype).eval(),
        {torch.contiguous_format: eager,
         torch.channels_last: copy.deepcopy(eager).to(memory_format=torch.channels_last)},
        counter.get_total_flops(),
        elements * torch.empty((), dtype=dtype).element_size(),
    )


def test_detector(benchmark, settings: Settings, ceiling: Ceiling, variant: str) -> None:
    v = {x.name: x for x in _variants(settings)}[variant]
    detectors = _detectors(settings.dtype, settings.device)
    model = detectors.fast if v.backend else detectors.eager[v.memory_format]
    g = torch.Generator().manual_seed(SEED)
    images = [torch.rand(3, *SIZE, generator=g).to(device=settings.device, dtype=settings.dtype)
              for _ in range(BATCH)]
    run_benchmark(benchmark, settings, ceiling, v, lambda: functools.partial(model, images),
                  settings.time_budget_s("network"), {"network": DETECTOR, "case": DETECTOR, "batch": BATCH},
                  detectors.flops * BATCH, detectors.min_bytes * BATCH)

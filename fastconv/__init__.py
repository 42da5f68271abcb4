"""fastconv: fused kernels for MobileNetV2's inverted residual and InceptionV3's asymmetric conv pairs.

The ops live in ``fastconv.ops`` (also re-exported here), drop-in modules in ``fastconv.nn``, the networks in
``fastconv.models``; ``fastconv.convert(model)`` swaps fastconv modules into a torchvision model in place.
Importing fastconv is light: modules that need torchvision load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from fastconv.backends import BackendUnavailable, get_backend, set_backend, use_backend
from fastconv.ops import (
    asymmetric_conv_pair,
    asymmetric_conv_parallel,
    depthwise_conv2d,
    inverted_residual,
    pointwise_conv2d,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "__version__",
    "asymmetric_conv_pair",
    "asymmetric_conv_parallel",
    "convert",
    "depthwise_conv2d",
    "get_backend",
    "inference_graph",
    "info",
    "inverted_residual",
    "models",
    "nn",
    "pointwise_conv2d",
    "set_backend",
    "use_backend",
]

_LAZY_MODULES = ("fold", "graphs", "models", "nn", "reference", "shapes")


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"fastconv.{name}")
    if name == "convert":
        return importlib.import_module("fastconv.convert").convert
    if name == "inference_graph":
        return importlib.import_module("fastconv.graphs").inference_graph
    if name == "info":
        return importlib.import_module("fastconv.info").info
    raise AttributeError(f"module 'fastconv' has no attribute {name!r}")

"""Triton kernels of fastconv, installed as the subpackage ``fastconv.kernels``.

Kernel code only: ``@triton.jit`` functions, their configurations and launchers, one module per op
(``kernels/<op>.py``) plus what they share (``common.py``). ``LAUNCHERS`` maps an op name
(``fastconv.backends.OPS``) to the launcher that runs it on normalised arguments (see ``fastconv.ops._run``);
``fastconv.backends`` reads it to know which ops have a Triton kernel. ``MODULES`` gives each op's module
(its kernel, ``CONFIGS``, ``grid`` and ``launch_args``), for tests and tools that compile or time configs.

Under ``TRITON_INTERPRET=1`` (set before this package is imported) the kernels run on CPU tensors, one
config each.
"""

from collections.abc import Callable
from types import ModuleType

from . import (
    asymmetric_conv_pair,
    asymmetric_conv_parallel,
    depthwise_conv2d,
    inverted_residual,
    pointwise_conv2d,
)

MODULES: dict[str, ModuleType] = {
    "depthwise_conv2d": depthwise_conv2d,
    "pointwise_conv2d": pointwise_conv2d,
    "inverted_residual": inverted_residual,
    "asymmetric_conv_pair": asymmetric_conv_pair,
    "asymmetric_conv_parallel": asymmetric_conv_parallel,
}

LAUNCHERS: dict[str, Callable] = {op: getattr(module, op) for op, module in MODULES.items()}

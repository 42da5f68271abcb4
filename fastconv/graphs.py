"""CUDA graphs of eval models: one capture for a fixed input shape, replayed for every later input.

At batch 1 a MobileNetV2 forward pass is a few hundred kernel launches of a few microseconds each, so the CPU
time of launching them bounds the latency; replaying a captured graph launches them all at once.
"""

from __future__ import annotations

import torch
from torch import nn

WARMUP_CALLS = 3  # enough for cuDNN's algorithm search, Triton's compilation and autotuning, lazy inits


class InferenceGraph:
    """A CUDA graph of ``model``'s forward pass on inputs of one shape, dtype and device.

    Call it like the model: the input is copied into the graph's static input buffer, the graph replays, and
    the static output buffer comes back. That buffer is overwritten by the next call: clone it to keep it.

    Attributes:
        model: the captured model (eval mode; its parameters must not be reallocated after capture).
        static_input: the input buffer the graph reads. # [shape of the example]
        static_output: the output buffer the graph writes.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, warmup_calls: int = WARMUP_CALLS) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"inference_graph: model must be a torch.nn.Module; got {type(model).__name__}")
        if not isinstance(example, torch.Tensor):
            raise TypeError(f"inference_graph: example must be a torch.Tensor; got {type(example).__name__}")
        if model.training:
            raise ValueError("inference_graph: model must be in eval mode (call model.eval()); a captured "
                             "training step would replay stale BatchNorm statistics and dropout masks")
        if example.device.type != "cuda":
            raise RuntimeError(f"inference_graph: CUDA graphs need a CUDA example input; got one on "
                               f"{example.device} (run the model eagerly there instead)")
        self.model = model
        # clone keeps the example's memory format, so a channels_last example gives a channels_last buffer.
        self.static_input = example.detach().clone()
        side = torch.cuda.Stream(device=example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        # Warm-up off the capture: lazy initialisation and algorithm searches must not be recorded.
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(warmup_calls):
                model(self.static_input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.static_output = model(self.static_input)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Runs the captured forward pass on ``x``.

        Args:
            x: input of the example's shape, dtype and device (any memory format).

        Returns:
            The static output buffer, valid until the next call.
        """
        expected = self.static_input
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"inference_graph: input must be a torch.Tensor; got {type(x).__name__}")
        if x.shape != expected.shape or x.dtype != expected.dtype or x.device != expected.device:
            raise ValueError(
                f"inference_graph: the graph was captured for input {tuple(expected.shape)} {expected.dtype} on "
                f"{expected.device}; got {tuple(x.shape)} {x.dtype} on {x.device} (capture another graph for "
                "that shape)")
        self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output


def inference_graph(model: nn.Module, example: torch.Tensor) -> InferenceGraph:
    """Captures a CUDA graph of an eval model's forward pass for inputs shaped like ``example``.

    The model warms up on a side stream first, so that cuDNN, Triton and lazy initialisation stay out of the
    graph; the capture then records one forward pass between static input and output buffers.

    Args:
        model: an eval-mode module whose parameters live on the example's CUDA device.
        example: an input of the shape, dtype and device every later call will have.

    Returns:
        A callable: ``graph(x)`` copies ``x`` into the static input, replays, and returns the static output.

    Raises:
        RuntimeError: ``example`` is not on a CUDA device.
        ValueError: ``model`` is in training mode.
        TypeError: ``model`` is not a module or ``example`` not a tensor.
    """
    return InferenceGraph(model, example)

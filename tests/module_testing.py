"""Checks shared by the tests of fastconv's modules, networks, ``convert`` and DDP training.

The modules are compared with the torchvision modules they replace, holding the same weights. Weights are
random and so are BatchNorm statistics and affine parameters: the default initialisation (mean 0, var 1,
weight 1, bias 0) would make folding a no-op and hide its bugs.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import pytest
import torch
from op_testing import FLOAT32, Tolerance, assert_within_tolerance
from torch import Tensor, nn

import fastconv
from fastconv import backends

CPU = torch.device("cpu")
CHANNELS_LAST = torch.channels_last


def module_backends() -> list:
    """The CPU backends as pytest params; one that cannot run every fastconv op here is skipped with the reason."""
    params = []
    for name in ("reference", "cpu"):
        reason = backends.backend_status(CPU)[name]
        marks = () if reason is None else pytest.mark.skip(reason=reason)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Gives every conv, BatchNorm and linear layer of ``model`` random parameters and statistics.

    Convs get He-normal weights and BatchNorms scales near 1, so activations keep their magnitude through
    a deep network; the classifier's logits are of order 1.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(randn(*m.weight.shape) * (2 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(randn(*m.bias.shape) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(randn(c) * 0.2)
                m.running_var.copy_(rand(c) + 0.5)
                if m.affine:
                    m.weight.copy_(rand(c) + 0.5)
                    m.bias.copy_(randn(c) * 0.2)
    return model


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Runs torch's CPU ops on one thread, for the torchvision side of the comparisons.

    Its NCHW float64 and bfloat16 grouped convs take slow CPU paths whose many small parallel regions
    stall for whole scheduler slices when another process shares the two cores: a MobileNetV2 forward
    went from 0.1 s to over 6 s. One thread keeps the tests' time independent of the machine's load.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fp64_output(reference: nn.Module, x: Tensor) -> Tensor:
    """``reference(x)`` computed in float64 on a copy (the fp64 oracle of the tolerance rule)."""
    with one_thread(), torch.no_grad():
        return copy.deepcopy(reference).double()(x.double())


def check_eval(ours: nn.Module, reference: nn.Module, x: Tensor, backend: str, tol: Tolerance = FLOAT32) -> Tensor:
    """Eval outputs of ``ours`` (fastconv) and ``reference`` (torchvision, same weights) agree.

    ``ours`` and ``reference`` are float32 modules in eval mode; they run in ``tol.dtype`` on copies when
    that differs.
    Checks: the tolerance rule against the fp64 reference (for half types, against torchvision's own error
    in that dtype), the output dtype, and that the input is unchanged.

    Returns:
        ``ours``'s output.
    """
    expected = fp64_output(reference, x)
    if tol.dtype != x.dtype:
        ours, reference, x = copy.deepcopy(ours).to(tol.dtype), copy.deepcopy(reference).to(tol.dtype), x.to(tol.dtype)
    before = x.clone()
    with torch.no_grad(), fastconv.use_backend(backend):
        out = ours(x)
    assert torch.equal(x, before), "the input was changed by the call"
    assert out.dtype == tol.dtype and out.shape == expected.shape

    def same_precision() -> Tensor:
        with one_thread(), torch.no_grad():
            return reference(x)

    assert_within_tolerance(out, expected, tol, same_precision)
    return out


def batchnorms(model: nn.Module) -> Iterator[tuple[str, nn.BatchNorm2d]]:
    return ((name, m) for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))


def check_train_step(ours: nn.Module, reference: nn.Module, x: Tensor) -> None:
    """In training mode ``ours`` computes exactly what ``reference`` does: outputs, gradients, running stats.

    Both take one SGD step on the same loss; their parameters and buffers are then equal. Training runs
    torchvision's own forward in both, on one thread (see ``one_thread``).
    """
    models = (ours.train(), reference.train())
    outputs = []
    for model in models:
        torch.manual_seed(0)  # the same dropout masks
        with one_thread():
            out = model(x)
            # Inception3 with aux_logits returns (logits, aux_logits): both take part in the loss.
            sum(o.square().mean() for o in (out if isinstance(out, tuple) else (out,))).backward()
        outputs.append(out)
    assert type(outputs[0]) is type(outputs[1])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    grads = [{k: p.grad for k, p in m.named_parameters()} for m in models]
    assert grads[0].keys() == grads[1].keys()
    for key, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][key], rtol=0, atol=0, msg=f"gradient of {key} differs")
    for model in models:
        torch.optim.SGD(model.parameters(), lr=0.1).step()
    state = [m.state_dict() for m in models]
    assert list(state[0]) == list(state[1])
    for key, value in state[0].items():
        torch.testing.assert_close(value, state[1][key], rtol=0, atol=0, msg=f"{key} differs after a step")

"""DistributedDataParallel training of fastconv's MobileNetV2: 2 CPU processes over gloo on 127.0.0.1.

Under DDP each process normalises with the BatchNorm statistics of its own half-batch, so the reference
runs each half-batch through the model separately, in one process, and averages the two gradients. It
does so at the parameters the replicas had at each step: a tiny network trained on batches of four is
chaotic enough that summation order alone (threads, all-reduce) makes trajectories part after two steps.
"""

from __future__ import annotations

import datetime
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from module_testing import randomize_
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

import fastconv.models

WORLD_SIZE = 2
STEPS = 3
# 64 x 64 images, four per process: the last BatchNorms see 16 values per channel. With fewer, their
# gradients are so ill-conditioned that summation order alone (threads, all-reduce) moves them by 1e-3.
PER_RANK = 4  # images per process and step
SIZE = 64
CLASSES = 5
LR = 0.05
# Dropout off: its masks would come from each process's own random stream.
MODEL_ARGS = {"width_mult": 0.25, "num_classes": CLASSES, "dropout": 0.0}


def make_model() -> nn.Module:
    return randomize_(fastconv.models.mobilenet_v2(**MODEL_ARGS), seed=0)


def make_data() -> tuple[Tensor, Tensor]:
    """Images [STEPS, WORLD_SIZE * PER_RANK, 3, SIZE, SIZE] and labels [STEPS, WORLD_SIZE * PER_RANK]."""
    g = torch.Generator().manual_seed(1)
    images = torch.randn(STEPS, WORLD_SIZE * PER_RANK, 3, SIZE, SIZE, generator=g)
    return images, torch.randint(CLASSES, (STEPS, WORLD_SIZE * PER_RANK), generator=g)


def half(rank: int) -> slice:
    return slice(rank * PER_RANK, (rank + 1) * PER_RANK)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_replica(rank: int, port: int, out: Path) -> None:
    """One DDP process: STEPS of SGD on its half-batches; saves its parameters and gradients at each step."""
    torch.set_num_threads(1)  # two processes share the machine's cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE,
                            timeout=datetime.timedelta(seconds=120))
    try:
        model = make_model()
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=LR)
        images, labels = make_data()
        params, grads = [], []
        for step in range(STEPS):
            params.append({n: p.detach().clone() for n, p in model.named_parameters()})
            optimizer.zero_grad()
            F.cross_entropy(ddp(images[step, half(rank)]), labels[step, half(rank)]).backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
            optimizer.step()
        params.append({n: p.detach().clone() for n, p in model.named_parameters()})
        torch.save({"params": params, "grads": grads}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gradients_are_the_average_of_the_half_batches(tmp_path):
    mp.spawn(train_replica, args=(free_port(), tmp_path), nprocs=WORLD_SIZE, join=True)
    replicas = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    params, grads = replicas[0]["params"], replicas[0]["grads"]
    for other in replicas[1:]:
        for step, state in enumerate(other["params"]):
            for name, p in state.items():
                assert torch.equal(p, params[step][name]), f"replicas differ at step {step}: {name}"

    model = make_model()
    assert_close_all(params[0], dict(model.named_parameters()), "initial parameters")
    images, labels = make_data()
    for step in range(STEPS):
        model.load_state_dict(params[step], strict=False)
        halves = []
        for rank in range(WORLD_SIZE):
            model.zero_grad()
            F.cross_entropy(model(images[step, half(rank)]), labels[step, half(rank)]).backward()
            halves.append({n: p.grad for n, p in model.named_parameters()})
        average = {n: sum(h[n] for h in halves) / WORLD_SIZE for n in halves[0]}
        for rank, replica in enumerate(replicas):
            assert_close_all(replica["grads"][step], average, f"rank {rank}, step {step}: gradient of")
        # The step applied the synchronised gradient.
        for name, p in params[step].items():
            assert torch.equal(params[step + 1][name], p.add(grads[step][name], alpha=-LR)), f"step {step}: {name}"


def assert_close_all(actual: dict[str, Tensor], expected: dict[str, Tensor], what: str) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert_close(actual[name], value.detach(), f"{what} {name}")


def assert_close(actual: Tensor, expected: Tensor, what: str) -> None:
    """The float32 tolerance rule: the processes sum in other orders (threads, all-reduce) than the reference."""
    scale = max(1.0, expected.abs().max().item())
    error = (actual - expected).abs().max().item()
    assert error <= 1e-4 * scale, f"{what}: max error {error:.3g}, max |expected| {scale:.3g}"

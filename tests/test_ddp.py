"""DistributedDataParallel training of fastconv's MobileNetV2: 2 CPU processes over gloo on 127.0.0.1.

Under DDP each process normalises with the BatchNorm statistics of its own half-batch, so the reference
runs each half-batch through the model separately, in one process, and averages the two gradients.
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
PER_RANK = 2  # images per process and step
SIZE = 32
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
    """One DDP process: STEPS of SGD on its half-batches; saves its gradients and final parameters."""
    torch.set_num_threads(1)  # two processes share the machine's cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE,
                            timeout=datetime.timedelta(seconds=120))
    try:
        model = make_model()
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=LR)
        images, labels = make_data()
        grads = []
        for step in range(STEPS):
            optimizer.zero_grad()
            F.cross_entropy(ddp(images[step, half(rank)]), labels[step, half(rank)]).backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
            optimizer.step()
        torch.save({"grads": grads, "params": dict(model.named_parameters())}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gradients_are_the_average_of_the_half_batches(tmp_path):
    mp.spawn(train_replica, args=(free_port(), tmp_path), nprocs=WORLD_SIZE, join=True)
    replicas = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]

    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    images, labels = make_data()
    for step in range(STEPS):
        halves = []
        for rank in range(WORLD_SIZE):
            model.zero_grad()
            F.cross_entropy(model(images[step, half(rank)]), labels[step, half(rank)]).backward()
            halves.append({n: p.grad.clone() for n, p in model.named_parameters()})
        for name, p in model.named_parameters():
            p.grad = sum(h[name] for h in halves) / WORLD_SIZE
            for rank, replica in enumerate(replicas):
                torch.testing.assert_close(replica["grads"][step][name], p.grad, rtol=1e-4, atol=1e-6,
                                           msg=f"rank {rank}, step {step}: gradient of {name}")
        optimizer.step()

    for name, p in model.named_parameters():
        assert torch.equal(replicas[0]["params"][name], replicas[1]["params"][name]), f"replicas differ: {name}"
        torch.testing.assert_close(replicas[0]["params"][name], p, rtol=1e-4, atol=1e-6, msg=name)

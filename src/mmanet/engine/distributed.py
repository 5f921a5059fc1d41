"""Data-parallel training across the processes that ``torchrun`` starts.

``torchrun --nproc_per_node=N -m mmanet train …`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU).
Without those variables every function here is a no-op for a single process, so the
engine calls them unconditionally.

What runs where:

- training: each process draws its own shard of every epoch (``DistributedSampler``) and
  its own modality masks; DistributedDataParallel averages the student's gradients (the
  teacher is frozen and not wrapped);
- evaluation and MAR mining: each process runs a disjoint shard (``rank::world`` — no
  padding, so nothing is counted twice) and the confusion matrices / histograms are
  summed across processes, so metrics and Ω equal the single-process ones;
- files (config, logs, checkpoints, results) are written by rank 0 only; the checkpoint
  holds every rank's random-number state so that a resumed run continues exactly.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset


def requested() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_from_env() -> int:
    """This process's rank as torchrun set it (0 when not started by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group when torchrun asked for one; return this process's device
    (``cuda:<LOCAL_RANK>`` on GPUs)."""
    if not requested() or active():
        return _local_device(device) if active() else device
    if device.type == "cuda":
        device = _local_device(device)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def _local_device(device: torch.device) -> torch.device:
    if device.type != "cuda":
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    if active():
        dist.barrier()
        dist.destroy_process_group()


def shard(dataset: Dataset) -> Dataset:
    """This process's disjoint part of an evaluation split (every ``world``-th sample)."""
    if not active():
        return dataset
    return Subset(dataset, range(rank(), len(dataset), world_size()))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over processes (in place); the tensor itself when alone."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate every process's tensor along ``dim`` (shapes may differ along it)."""
    if not active():
        return tensor
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts, dim=dim)


def all_gather_object(value: Any) -> list[Any]:
    if not active():
        return [value]
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, value)
    return parts


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (batch-norm statistics). DDP broadcasts them
    before each forward, so after the last step of an epoch they differ by process."""
    if active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    if active():
        dist.barrier()

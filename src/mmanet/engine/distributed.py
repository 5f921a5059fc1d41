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

Process exit (gloo): a collective runs on one of gloo's worker threads, and that thread
drops its references to the collective's tensors only after the caller has been woken.
A tensor made in Python whose last Python reference goes first becomes owned by the C++
side, and releasing it then takes the GIL. When the worker thread gets there after the
interpreter has begun to shut down, it is made to exit inside a destructor, which aborts
the process ("terminate called without an active exception", SIGABRT; the process group
cannot be destroyed first: DistributedDataParallel keeps it, and its threads, alive).
So every tensor handed to a collective here stays referenced from Python until gloo has
let go of it, and :func:`shutdown` waits for that before the interpreter exits.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterable
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


def shutdown(timeout: float = 30.0) -> None:
    """Leave the process group together, then wait (at most ``timeout`` seconds) until
    gloo's threads hold none of the tensors of this process's collectives."""
    if active():
        dist.barrier()
        dist.destroy_process_group()
    settle(timeout)


# Tensors handed to a collective, each with its use count (C++ references) beforehand.
_handed_over: list[tuple[torch.Tensor, int]] = []


def _hand_over(tensors: Iterable[torch.Tensor]) -> None:
    """Keep ``tensors`` referenced until the collective they go to has released them."""
    settle()
    _handed_over.extend((tensor, _use_count(tensor)) for tensor in tensors)


def _use_count(tensor: torch.Tensor) -> int:
    return tensor._use_count() if hasattr(tensor, "_use_count") else 0


def settle(timeout: float = 0.0) -> bool:
    """Forget the tensors that no collective holds any more, waiting up to ``timeout``
    seconds for the rest (the GIL is free meanwhile); whether none is left."""
    deadline = time.monotonic() + timeout
    while True:
        _handed_over[:] = [(t, n) for t, n in _handed_over if _use_count(t) > n]
        if not _handed_over or time.monotonic() >= deadline:
            return not _handed_over
        time.sleep(0.002)


def shard(dataset: Dataset) -> Dataset:
    """This process's disjoint part of an evaluation split (every ``world``-th sample)."""
    if not active():
        return dataset
    return Subset(dataset, range(rank(), len(dataset), world_size()))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over processes (in place); the tensor itself when alone."""
    if active():
        _hand_over([tensor])
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate every process's tensor along ``dim`` (shapes may differ along it)."""
    if not active():
        return tensor
    return torch.cat(all_gather_object(tensor.cpu()), dim=dim)


def all_gather_object(value: Any) -> list[Any]:
    """Every process's ``value`` (picklable), in rank order. Like
    ``torch.distributed.all_gather_object``, with the byte tensors kept here (see above)."""
    if not active():
        return [value]
    world, device = world_size(), _collective_device()
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    _all_gather(sizes, torch.tensor([len(payload)], dtype=torch.int64, device=device))
    longest = max(int(size) for size in sizes)
    mine = torch.zeros(longest, dtype=torch.uint8, device=device)
    mine[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    parts = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(world)]
    _all_gather(parts, mine)
    return [
        pickle.loads(part[: int(size)].cpu().numpy().tobytes())
        for part, size in zip(parts, sizes, strict=True)
    ]


def _collective_device() -> torch.device:
    """Where the tensors of a collective live: NCCL takes the process's GPU, gloo the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_gather(outputs: list[torch.Tensor], tensor: torch.Tensor) -> None:
    _hand_over([*outputs, tensor])
    dist.all_gather(outputs, tensor)


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (batch-norm statistics). DDP broadcasts them
    before each forward, so after the last step of an epoch they differ by process."""
    if active():
        for buffer in module.buffers():
            _hand_over([buffer])
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    if active():
        dist.barrier()

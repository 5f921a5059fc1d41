"""The frozen teacher: the network trained on complete data, loaded from its run, run
forward only — its batch norms folded into its convolutions and, on the CPU,
channels-last (0.67-0.74x the time of SF's and ESANet's forward,
``benchmarks/bench_teacher.py``) — and optionally cached per training sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mmanet.config import Config
from mmanet.data import TensorMultimodalDataset
from mmanet.data.base import AVAILABLE_KEY, base_dataset
from mmanet.engine.loader import make_loader
from mmanet.engine.network import load_network
from mmanet.errors import ConfigError
from mmanet.models import Builder, UnifiedNetwork
from mmanet.nn import fold_batch_norms
from mmanet.outputs import NetworkOutput
from mmanet.registry import LOSS_TERMS


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


class FrozenTeacher:
    """The teacher of a distilling run: ``teacher(inputs, index) -> NetworkOutput`` on the
    complete inputs of a batch (never masked).

    Args:
        source: the teacher's run or checkpoint folder (``method.teacher``).
        modalities: the student's modalities (the teacher must have the same).
        device: where it runs.
        channels_last: NHWC convolutions (always on the CPU).
        builder: the student's builder when it is not a registered one.
        cache_split: with ``method.cache_teacher``, the training split whose outputs are
            computed once and looked up by sample index.
        allow_any: distil from a run that is not a complete-modality teacher
            (``method.allow_any_teacher``); refused otherwise.
    """

    def __init__(
        self,
        source: str | Path,
        modalities: list[str],
        device: torch.device,
        channels_last: bool,
        builder: Builder | None = None,
        cache_split: Dataset | None = None,
        cache_batch_size: int = 512,
        allow_any: bool = False,
    ) -> None:
        network, meta = load_network(source, builder=builder, modalities=modalities)
        if not allow_any:
            check_complete_teacher(source, meta)
        self.checkpoint, self.epoch = meta["checkpoint"], meta.get("epoch")
        self.network: UnifiedNetwork = network.to(device).eval().requires_grad_(False)
        fold_batch_norms(self.network)
        self.channels_last = channels_last or device.type == "cpu"
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)
        self.device = device
        self.cache_split, self.cache_batch_size = cache_split, cache_batch_size
        self.cache: NetworkOutput | None = None

    def record(self) -> dict[str, Any]:
        """Which checkpoint of the teacher run this is (for the student's run record)."""
        return {"checkpoint": self.checkpoint, "epoch": self.epoch}

    @torch.no_grad()
    def __call__(self, inputs: dict[str, torch.Tensor], index: torch.Tensor | None = None):
        """The teacher's outputs on the batch; with a cache, looked up by ``index``."""
        if index is None or self.cache_split is None:
            return self.network(self._layout(inputs))
        if self.cache is None:
            self.cache = self._whole_split()
        rows = index.to(self.device)
        return NetworkOutput(
            self.cache.fused[rows], self.cache.features[rows], self.cache.logits[rows]
        )

    def _layout(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.channels_last:
            return inputs
        return {k: _channels_last(v) for k, v in inputs.items()}

    def _whole_split(self) -> NetworkOutput:
        assert self.cache_split is not None
        parts: list[NetworkOutput] = []
        for inputs, _ in make_loader(self.cache_split, self.cache_batch_size, 0):
            inputs.pop(AVAILABLE_KEY, None)  # only complete samples' outputs are looked up
            out = self.network(self._layout({k: v.to(self.device) for k, v in inputs.items()}))
            if not isinstance(out.fused, torch.Tensor):
                raise ConfigError(
                    "method.cache_teacher needs a model whose fusion output is a tensor"
                )
            parts.append(out)
        return NetworkOutput(
            torch.cat([p.fused for p in parts]),
            torch.cat([p.features for p in parts]),
            torch.cat([p.logits for p in parts]),
        )


def check_complete_teacher(source: str | Path, meta: dict[str, Any]) -> None:
    """Refuse a teacher run that was not trained on complete inputs: one with modality
    dropout (SF-MD, MMANet, ...) or on one combination (a customized model)."""
    method = (meta.get("config") or {}).get("method") or {}
    if method.get("dropout", False) or method.get("combination"):
        how = "on one combination" if method.get("combination") else "with modality dropout"
        raise ConfigError(
            f"method.teacher={source}: that run is method.name={method.get('name')!r}, trained "
            f"{how}, not a complete-modality teacher (method.name=teacher); train one, or set "
            "method.allow_any_teacher=true to distil from it anyway"
        )


def teacher_for_run(
    config: Config,
    train: Dataset,
    modalities: list[str],
    device: torch.device,
    builder: Builder | None = None,
) -> FrozenTeacher | None:
    """The teacher a run distils from (``method.teacher``), or None when it does not;
    ``train`` is the run's training split (the one a cache covers)."""
    method = config.method
    if not method.uses_teacher:
        if method.cache_teacher:
            raise ConfigError("method.cache_teacher needs a distilling method (a teacher)")
        return None
    if method.teacher is None:
        readers = [t for t in method.terms if LOSS_TERMS.declared(t, "needs_teacher")]
        reader = (
            f"method.distill={method.distill!r}"
            if method.distill != "none"
            else f"method.terms.{readers[0]}"
        )
        raise ConfigError(f"{reader} needs method.teacher=<teacher run>")
    cache = None
    if method.cache_teacher:
        deterministic = isinstance(base_dataset(train), TensorMultimodalDataset)
        if not deterministic and config.data.augment:
            raise ConfigError(
                "method.cache_teacher needs training data without random augmentation "
                "(set data.augment=false)"
            )
        cache = train
    return FrozenTeacher(
        method.teacher,
        modalities,
        device,
        config.channels_last,
        builder,
        cache,
        config.data.eval_batch_size,
        method.allow_any_teacher,
    )


__all__ = ["FrozenTeacher", "check_complete_teacher", "teacher_for_run"]

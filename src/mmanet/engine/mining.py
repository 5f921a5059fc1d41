"""MAR's mining of the weak combinations (paper Eqs. 9-13) as an epoch-end hook.

After each warm-up epoch the deployment network (eval mode) predicts the mining split —
the training split without augmentation by default, ``method.mar.mining_split=val``
for the authors' choice; its complete samples only — with the full mask and each drop-one
mask from one encoder
pass per batch; the regularizer turns the predicted-label counts (what the task counts:
samples, or labelled pixels) into a row of its memory bank and fixes Ω after the last
warm-up epoch. Under data parallelism every process mines its shard and the counts are
summed, so every process fixes the same Ω.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from mmanet.config import DataConfig, MethodConfig
from mmanet.data import DataBundle
from mmanet.engine import distributed
from mmanet.engine.evaluate import combination_confusions
from mmanet.engine.loader import make_loader
from mmanet.io import atomic_write_json
from mmanet.modality import Modalities, drop_one_masks, full_mask
from mmanet.models import UnifiedNetwork
from mmanet.registry import REGULARIZERS
from mmanet.tasks import Task


class Mining:
    """The regularizer of a run (``method.regularize``), its Ω and its mining hook.

    ``regularizer`` is what the registered factory made (e.g. a
    :class:`~mmanet.losses.WeakCombinationMiner`); its state goes into every checkpoint.
    """

    def __init__(self, method: MethodConfig, modalities: list[str]) -> None:
        self.method = method
        self.names = Modalities(modalities)
        # method.regularize's, or the one a loss term asks for (omega_source)
        self.regularizer = REGULARIZERS.get(omega_source(method))(len(modalities), method)

    @property
    def omega(self) -> list[tuple[int, ...]] | None:
        return self.regularizer.omega

    def omega_lookup(self) -> torch.Tensor | None:
        """Host-side table over mask codes: True where that mask is in Ω (None: no Ω yet)."""
        return self.regularizer.omega_lookup()

    def after_epoch(
        self,
        epoch: int,
        model: UnifiedNetwork,
        data: DataBundle,
        task: Task,
        device: torch.device,
        loading: DataConfig,
    ) -> dict[str, Any]:
        """Mine after (1-based) ``epoch`` when the regularizer needs it; the log row."""
        if not self.regularizer.needs_mining(epoch):
            return {}
        split = self.method.mar.mining_split
        dataset = (data.train_eval or data.train) if split == "train" else data.val
        complete = data.availability(dataset).all(dim=1)  # the drop-one masks need them all
        if not bool(complete.all()):
            dataset = Subset(dataset, complete.nonzero().flatten().tolist())
        loader = make_loader(
            distributed.shard(dataset), loading.eval_batch_size, loading.num_workers
        )
        m = len(self.names)
        masks = [full_mask(m), *drop_one_masks(m)]
        confusions = combination_confusions(model, loader, masks, task, device)
        g = self.regularizer.update(epoch, confusions.sum(dim=1))  # predicted counts (m+1, k)
        row: dict[str, Any] = {
            f"mar_g/{name}": float(value) for name, value in zip(self.names, g, strict=True)
        }
        for mask, confusion in zip(masks, confusions, strict=True):
            row[f"mine_acc/{self.names.mask_name(mask)}"] = (
                100.0 * float(confusion.diag().sum()) / float(confusion.sum())
            )
        if self.omega is not None:
            row["omega"] = ";".join(self.names.mask_name(mask) for mask in self.omega)
        return row

    def summary(self) -> dict[str, Any]:
        """What ``miner.json`` and the checkpoint's metadata record."""
        regularizer = self.regularizer
        bank = getattr(regularizer, "memory_bank", None)
        return {
            "mode": getattr(regularizer, "mode", self.method.regularize),
            "memory_bank": [] if bank is None else bank[: regularizer.filled].tolist(),
            "dropped": list(self.names),
            "omega": [self.names.mask_name(mask) for mask in self.omega or []],
        }

    def write_summary(self, run_dir: Path) -> None:
        atomic_write_json(run_dir / "miner.json", self.summary())

    def state_dict(self) -> dict[str, Any]:
        return self.regularizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.regularizer.load_state_dict(state)


def omega_source(method: MethodConfig) -> str:
    """The regularizer whose Ω a run keeps: ``method.regularize``, else the one the first
    loss term of ``method.terms`` with weight > 0 names with its ``omega_from(method)``
    declaration (DMRNet's hard term: MAR's miner, without MAR's regularization head);
    "none" when there is none (:attr:`MethodConfig.omega_from`, which the config's checks
    read too)."""
    return method.omega_from[0]


__all__ = ["Mining", "omega_source"]

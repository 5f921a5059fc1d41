"""The one training loop for every method: teacher, SF-MD, +SP, +MAD, +SR, +MAR, MMANet.

A step computes ``L = L_task + α·L_MAD + β·L_MAR`` (SPEC §1); which terms are on is
configuration (``method.distill``, ``method.regularize``), not a different loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from mmanet.config import Config, ConfigError, save_config, to_dict
from mmanet.data import DataBundle, TensorMultimodalDataset, build_data
from mmanet.data.base import INDEX_KEY, IndexedDataset
from mmanet.engine import distributed
from mmanet.engine.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_into,
    load_meta,
    load_training_state,
    resolve_checkpoint,
    save_checkpoint,
)
from mmanet.engine.evaluate import combination_confusions, evaluate_split
from mmanet.engine.loader import make_loader
from mmanet.engine.logger import RunLogger
from mmanet.engine.schedule import build_optimizer, build_scheduler
from mmanet.io import atomic_write_json
from mmanet.losses import WeakCombinationMiner, mad_loss
from mmanet.modality import (
    MaskSampler,
    Modalities,
    drop_one_masks,
    full_mask,
    mask_code,
    mask_codes,
)
from mmanet.models import UnifiedNetwork, build_model
from mmanet.models.unified import NetworkOutput, fused_map, select_samples
from mmanet.nn import fold_batch_norms
from mmanet.provenance import code_version


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_network(
    checkpoint: str | Path, config: Config, bundle: DataBundle, reg_head: bool = False
) -> UnifiedNetwork:
    """Build the configured network and load a checkpoint's weights into it."""
    path = resolve_checkpoint(checkpoint)
    meta = load_meta(path)
    if meta.get("modalities") != list(bundle.modalities):
        raise CheckpointError(
            f"{path}: trained on modalities {meta.get('modalities')}, "
            f"the data has {list(bundle.modalities)}"
        )
    model = build_model(
        config.model, bundle.modalities, bundle.input_shapes, bundle.num_classes, reg_head=reg_head
    )
    load_into(model, path)
    return model


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def nonfinite_message(terms: dict[str, torch.Tensor], epoch: int, step: int) -> str:
    bad = [f"{k}={float(v)}" for k, v in terms.items() if k != "loss" and not torch.isfinite(v)]
    return (
        f"non-finite loss at epoch {epoch}, step {step}: {', '.join(bad) or 'loss'} "
        "(lower optim.lr, check the inputs, or set optim.nonfinite=skip to drop such batches)"
    )


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names where and why."""


class TrainingInterrupted(Exception):
    """SIGINT / SIGTERM: a resumable checkpoint was written; ``checkpoint`` names it."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}" if checkpoint else "the last checkpoint"
        super().__init__(f"interrupted by {name}; continue from {where} with --resume")
        self.signum = signum
        self.checkpoint = checkpoint


class _StudentStep(nn.Module):
    """The trainer's student step as a module, for DistributedDataParallel to wrap."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.model = trainer.model  # the parameters DDP synchronises
        self._step = trainer.training_step  # not a module attribute: the teacher stays out

    def forward(self, *args: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        return self._step(*args)


class Trainer:
    """Trains one method on one dataset into ``config.out``; resumable at epoch boundaries."""

    def __init__(self, config: Config, data: DataBundle | None = None) -> None:
        self.cfg = config
        self.run_dir = Path(config.out)
        code_version()  # recorded as of the start of the run (cached)
        self.device = distributed.setup(resolve_device(config.device))
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        self.data = data if data is not None else build_data(config.data)
        method = config.method
        m = len(self.data.modalities)

        bona_fide = config.data.bona_fide_class
        if bona_fide is not None and (self.data.num_classes != 2 or bona_fide not in (0, 1)):
            raise ConfigError(
                f"data.bona_fide_class={bona_fide} needs a two-class task with class 0 or 1 "
                f"(this data has {self.data.num_classes} classes)"
            )
        torch.manual_seed(config.seed)
        self.model = build_model(
            config.model,
            self.data.modalities,
            self.data.input_shapes,
            self.data.num_classes,
            reg_head=method.regularize != "none",
        ).to(self.device)
        self.teacher_channels_last = config.channels_last or self.device.type == "cpu"
        self.teacher = self._load_teacher() if method.distill != "none" else None
        # each process draws its own masks; rank 0 draws the single-process ones
        self.mask_generator = torch.Generator().manual_seed(config.seed + 1 + 7919 * self.rank)
        self.data_generator = torch.Generator().manual_seed(config.seed + 2)
        self.sampler = self._mask_sampler(m)
        self.fixed_mask = torch.tensor(
            self._fixed_mask(m),
            dtype=torch.float32,  # on the host, like the sampled masks
        ).unsqueeze(0)
        self.train_sampler = (
            DistributedSampler(self.data.train, shuffle=True, seed=config.seed, drop_last=True)
            if distributed.active()
            else None
        )
        self.teacher_cache: NetworkOutput | None = None
        if method.cache_teacher:
            self._check_teacher_cache()
        self.train_loader = make_loader(
            IndexedDataset(self.data.train) if method.cache_teacher else self.data.train,
            config.data.batch_size,  # per process
            config.data.num_workers,
            shuffle=self.train_sampler is None,
            generator=self.data_generator,
            drop_last=len(self.data.train) > config.data.batch_size * self.world_size,
            sampler=self.train_sampler,
            pin_memory=self.device.type == "cuda",
        )
        self.class_weights = self._class_weights()
        features = method.mad.features  # "auto": the fused map for segmentation (SPEC §3)
        self.mad_on_fused = features == "fused" or (
            features == "auto" and self.data.task == "segmentation"
        )
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, len(self.train_loader))
        self.miner = (
            WeakCombinationMiner(
                m, method.mar.warmup_epochs, method.regularize, method.mar.distribution
            )
            if method.regularize != "none"
            else None
        )
        self.epoch = 0  # completed epochs
        self.partial_steps = 0  # steps of epoch + 1 already done (an interrupted epoch)
        self.interrupt: int | None = None  # the signal that asked the run to stop
        self.logger: RunLogger | None = None
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Under data parallelism the whole student step runs inside DistributedDataParallel
        # (its loss is the output, so parameters a step leaves unused — the regularization
        # head without Ω samples, auxiliary heads — are found and skipped); the teacher
        # stays outside, frozen.
        self.step = (
            DistributedDataParallel(_StudentStep(self), find_unused_parameters=True)
            if distributed.active()
            else self.training_step
        )

    # -- set-up ---------------------------------------------------------------------------

    def _check_teacher_cache(self) -> None:
        if self.teacher is None:
            raise ConfigError("method.cache_teacher needs a distilling method (a teacher)")
        deterministic = isinstance(self.data.train, TensorMultimodalDataset)
        if not deterministic and self.cfg.data.augment:
            raise ConfigError(
                "method.cache_teacher needs training data without random augmentation "
                "(set data.augment=false)"
            )

    def autocast(self) -> torch.autocast:
        """Autocast to ``precision`` (a no-op for fp32)."""
        return torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )

    def _load_teacher(self) -> UnifiedNetwork:
        source = self.cfg.method.teacher
        if source is None:
            raise ConfigError(
                f"method.distill={self.cfg.method.distill!r} needs method.teacher=<teacher run>"
            )
        teacher = load_network(source, self.cfg, self.data).to(self.device)
        teacher.eval().requires_grad_(False)
        # It only runs forward: its batch norms are folded into its convolutions, and on
        # the CPU it runs channels-last whatever `channels_last` says (both together: 0.67-
        # 0.74x the time of SF's and ESANet's forward, benchmarks/bench_teacher.py); on a
        # GPU it follows `channels_last`.
        fold_batch_norms(teacher)
        if self.teacher_channels_last:
            teacher.to(memory_format=torch.channels_last)
        return teacher

    def _class_weights(self) -> torch.Tensor | None:
        """Median-frequency weights of the training labels (``data.class_weighting``)."""
        if self.cfg.data.class_weighting == "none":
            return None
        if self.data.task != "segmentation":
            raise ConfigError("data.class_weighting=median_frequency is for segmentation data")
        from mmanet.data.nyuv2 import median_frequency_weights

        source = self.data.train_eval or self.data.train
        return median_frequency_weights(source, self.data.num_classes).float().to(self.device)

    def _fixed_mask(self, m: int) -> tuple[int, ...]:
        """The mask of a run without dropout: the full mask, or the customized combination."""
        combination = self.cfg.method.combination
        if self.cfg.method.name == "customized" and combination is None:
            raise ConfigError("method.name=customized needs method.combination, e.g. rgb+ir")
        if combination is None:
            return full_mask(m)
        try:
            return Modalities(self.data.modalities).mask_from_name(combination)
        except KeyError as err:
            raise ConfigError(f"method.combination={combination!r}: {err.args[0]}") from None

    def _mask_sampler(self, m: int) -> MaskSampler:
        try:
            return MaskSampler(m, self.cfg.method.mask_probabilities)
        except ValueError as err:
            raise ConfigError(f"method.mask_probabilities: {err}") from None

    def meta(self) -> dict[str, Any]:
        return {
            "format": "mmanet-checkpoint-1",
            "code_version": code_version(),
            "method": self.cfg.method.name,
            "modalities": list(self.data.modalities),
            "input_shapes": {k: list(v) for k, v in self.data.input_shapes.items()},
            "class_names": list(self.data.class_names),
            "miner": self.miner_summary(),
            "config": to_dict(self.cfg),
        }

    def miner_summary(self) -> dict[str, Any] | None:
        if self.miner is None:
            return None
        names = self.model.modalities
        return {
            "mode": self.miner.mode,
            "memory_bank": self.miner.memory_bank[: self.miner.filled].tolist(),
            "dropped": list(names),
            "omega": [names.mask_name(mask) for mask in self.miner.omega or []],
        }

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, scheduler, miner and random state; under data parallelism the random
        state of every process (``rng_ranks``), gathered — so every process calls this."""
        rng = self._rng_state()
        return {
            "epoch": self.epoch,
            "step": self.partial_steps,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "miner": self.miner.state_dict() if self.miner else None,
            "rng": rng,
            "rng_ranks": distributed.all_gather_object(rng) if distributed.active() else None,
        }

    def _rng_state(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "mask": self.mask_generator.get_state(),
            "data": self.data_generator.get_state(),
            "python": list(random.getstate()[1]),
            "python_gauss": random.getstate()[2],
            "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.partial_steps = int(state.get("step", 0))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.miner is not None and state["miner"] is not None:
            self.miner.load_state_dict(state["miner"])
        ranks = state.get("rng_ranks")
        if ranks and len(ranks) != self.world_size:
            raise CheckpointError(
                f"{self.run_dir}: the checkpoint was written by {len(ranks)} processes, "
                f"this run has {self.world_size}; resume with the same number"
            )
        rng = ranks[self.rank] if ranks else state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.mask_generator.set_state(rng["mask"])
        self.data_generator.set_state(rng["data"])
        random.setstate((3, tuple(rng["python"]), rng["python_gauss"]))
        np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_pos"]))

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0; every process must call this under data parallelism)."""
        state = self.state_dict()
        path = None
        if distributed.is_main():
            path = save_checkpoint(
                self.run_dir,
                self.epoch,
                self.model.state_dict(),
                state,
                self.meta(),
                step=self.partial_steps,
            )
        distributed.barrier()  # nobody resumes or moves on before the checkpoint is whole
        return path

    def resume(self) -> bool:
        """Continue from the latest complete checkpoint of the run, if there is one."""
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return False
        load_into(self.model, path)
        self.load_state_dict(load_training_state(path))
        return True

    # -- training -------------------------------------------------------------------------

    def fit(self, resume: bool = False, stop_after: int | None = None) -> dict[str, Any] | None:
        """Train to ``optim.epochs`` (or stop after epoch ``stop_after``) and evaluate.

        Returns the test results once training is complete, else None.
        """
        resumed = resume and self.resume()  # a checkpoint that does not fit changes nothing
        if distributed.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            self.logger = RunLogger(self.run_dir, self.cfg.tensorboard)
            if resumed:
                self.logger.resume(self.epoch)
        distributed.barrier()
        try:
            with self._stop_on_signals():
                self._train_epochs(stop_after)
        finally:
            if self.logger is not None:
                self.logger.close()
        if self.epoch < self.cfg.optim.epochs:
            return None
        return self.test()

    def _train_epochs(self, stop_after: int | None) -> None:
        for epoch in range(self.epoch + 1, self.cfg.optim.epochs + 1):
            row = self.train_epoch(epoch, skip=self.partial_steps)
            if self.interrupt is not None:  # stopped between two steps of this epoch
                self.partial_steps += row["steps"]
                raise TrainingInterrupted(self.interrupt, self.save())
            self.epoch, self.partial_steps = epoch, 0
            distributed.broadcast_buffers(self.model)
            if self.miner is not None and self.miner.needs_mining(epoch):
                row.update(self.mine(epoch))
            if self.logger is not None:
                self.logger.log(row)
            self.save()
            if stop_after is not None and epoch >= stop_after:
                break

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGINT / SIGTERM let the current step finish, then the run saves a checkpoint
        and raises :class:`TrainingInterrupted` (single process, main thread only: under
        torchrun the launcher owns the signals)."""
        if distributed.active() or threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self.interrupt is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self.interrupt = signum

        previous = {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def train_batch(
        self,
        inputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
        omega: torch.Tensor | None,
        epoch: int = 0,
        step: int = 0,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """One optimisation step on a loader batch: draw the masks, run the training step,
        back-propagate and update. ``omega`` is the miner's host-side Ω lookup (or None).

        Returns the loss terms, the deployment logits, the labels and the masks (on the
        device), or None when a non-finite loss was skipped (``optim.nonfinite=skip``).
        The step waits for the device once, after the backward pass (the finiteness check);
        the Ω samples are picked on the host, from the host-side masks.
        """
        cfg = self.cfg
        index = inputs.pop(INDEX_KEY, None)  # with method.cache_teacher
        names = self.model.modalities
        if cfg.method.dropout:
            host_mask = self.sampler.sample(len(labels), self.mask_generator)
        else:
            host_mask = self.fixed_mask.expand(len(labels), -1)
            if self.teacher is None:  # the mask is fixed: absent modalities' encoders need not run
                present = host_mask[0].tolist()
                inputs = {k: inputs[k] for k, bit in zip(names, present, strict=True) if bit}
        reg_rows = None
        if omega is not None:  # indices of the samples whose mask is in Ω
            reg_rows = self.to_device(omega[mask_codes(host_mask)].nonzero().flatten())
        mask = self.to_device(host_mask)
        inputs = {k: self.to_device(v) for k, v in inputs.items()}
        labels = self.to_device(labels)
        if cfg.channels_last:
            inputs = {k: _channels_last(v) for k, v in inputs.items()}
        skip_bad = cfg.optim.nonfinite == "skip"
        if skip_bad:  # a skipped batch must not leave its batch-norm statistics behind
            saved = [buffer.clone() for buffer in self.model.buffers()]
        with self.autocast():
            loss, terms, logits = self.step(inputs, labels, mask, reg_rows, index)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        # Every process takes the same decision, so DDP's processes stay in step.
        bad = distributed.all_reduce_sum((~torch.isfinite(loss.detach())).float())
        if bad.item():
            if not skip_bad:
                raise TrainingError(nonfinite_message(terms, epoch, step))
            self.optimizer.zero_grad(set_to_none=True)
            for buffer, value in zip(self.model.buffers(), saved, strict=True):
                buffer.copy_(value)
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return terms, logits, labels, mask

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the training device; to a GPU through page-locked memory, so
        the copy is queued without waiting for the work already queued."""
        if self.device.type != "cuda" or tensor.device.type != "cpu":
            return tensor.to(self.device)
        if not tensor.is_pinned():
            tensor = tensor.contiguous().pin_memory()  # an expanded mask has shared elements
        return tensor.to(self.device, non_blocking=True)

    def train_epoch(self, epoch: int, skip: int = 0) -> dict[str, Any]:
        """One pass over the training split (its last ``len - skip`` batches when ``skip``
        steps of it were done before an interruption); returns the epoch's log row."""
        cfg = self.cfg
        self.model.train()
        names = self.model.modalities
        m = len(names)
        omega = self.miner.omega_lookup() if self.miner is not None else None  # on the host
        totals: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = defaultdict(int)
        skipped = 0  # batches with a non-finite loss (optim.nonfinite=skip)
        correct = torch.zeros(2**m, device=self.device)  # summed per-sample accuracies
        seen = torch.zeros(2**m, device=self.device)
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)
        start = time.perf_counter()
        steps = len(self.train_loader) - skip
        bar = tqdm(
            itertools.islice(self.train_loader, steps),
            total=steps,
            desc=f"{cfg.method.name} epoch {epoch}/{cfg.optim.epochs}",
            leave=False,
            disable=not cfg.progress or not distributed.is_main(),
            dynamic_ncols=True,
        )
        for step, (inputs, labels) in enumerate(bar):
            done = self.train_batch(inputs, labels, omega, epoch, skip + step + 1)
            if done is None:
                skipped += 1
                continue
            terms, logits, labels, mask = done
            for key, value in terms.items():
                totals[key] = totals.get(key, 0) + value
                counts[key] += 1
            codes = mask_codes(mask)
            correct.index_add_(0, codes, self.sample_accuracy(logits, labels))
            seen.index_add_(0, codes, torch.ones_like(codes, dtype=seen.dtype))
            if step % 10 == 0:
                bar.set_postfix(loss=f"{terms['loss'].item():.3f}")
            if self.interrupt is not None:
                steps = step + 1
                break

        row: dict[str, Any] = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
        row.update({key: float(value) / counts[key] for key, value in totals.items()})
        row["steps"] = steps
        if skipped:
            row["skipped_steps"] = skipped
        row["epoch_seconds"] = time.perf_counter() - start
        correct, seen = correct.cpu(), seen.cpu()
        for mask in names.combinations:
            code = mask_code(mask)
            if seen[code] > 0:
                accuracy = 100.0 * float(correct[code]) / float(seen[code])
                row[f"train_acc/{names.mask_name(mask)}"] = accuracy
        return row

    @torch.no_grad()
    def teacher_outputs(
        self, inputs: dict[str, torch.Tensor], index: torch.Tensor | None
    ) -> NetworkOutput:
        """The frozen teacher on the batch; with ``method.cache_teacher``, looked up by the
        samples' indices in outputs computed once for the whole training split."""
        if index is None:
            return self.teacher(self._teacher_inputs(inputs))
        if self.teacher_cache is None:
            self.teacher_cache = self._teacher_pass()
        cache, rows = self.teacher_cache, index.to(self.device)
        return NetworkOutput(cache.fused[rows], cache.features[rows], cache.logits[rows])

    def _teacher_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.teacher_channels_last:
            return inputs
        return {k: _channels_last(v) for k, v in inputs.items()}

    def _teacher_pass(self) -> NetworkOutput:
        assert self.teacher is not None
        parts: list[NetworkOutput] = []
        for inputs, _ in make_loader(self.data.train, self.cfg.data.eval_batch_size, 0):
            out = self.teacher(
                self._teacher_inputs({k: v.to(self.device) for k, v in inputs.items()})
            )
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

    def sample_accuracy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(b,) accuracy of each sample: 0/1, or the share of its labelled pixels."""
        hits = (logits.argmax(1) == labels).float()
        if hits.ndim == 1:
            return hits
        valid = (labels != self.data.ignore_index).float()
        return (hits * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, per sample or per labelled pixel (``ignore_index`` skipped): the
        (class-weighted) mean over the labelled pixels, and 0 — not NaN — when a batch (or
        the Ω samples, or a coarse side output) has none."""
        ignore = self.data.ignore_index
        if ignore is None:
            return F.cross_entropy(logits, labels, weight=self.class_weights)
        total = F.cross_entropy(
            logits, labels, weight=self.class_weights, ignore_index=ignore, reduction="sum"
        )
        valid = labels != ignore
        if self.class_weights is None:
            count = valid.sum().to(total.dtype)
        else:
            # the weights of the labelled pixels, without boolean indexing (no device sync)
            count = (self.class_weights[torch.where(valid, labels, 0)] * valid).sum()
        return total / count.clamp_min(torch.finfo(total.dtype).tiny)

    def side_loss(self, head: torch.nn.Module, labels: torch.Tensor) -> torch.Tensor | float:
        """Multi-scale supervision: the pixel loss of each side output a head left in
        ``head.side_outputs`` (ESANet's decoder modules), against nearest-downsampled labels."""
        sides = getattr(head, "side_outputs", None)
        if not sides:
            return 0.0
        total = 0.0
        for logits in sides:
            small = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")
            total = total + self.task_loss(logits, small[:, 0].long())
        return total

    def training_step(
        self,
        inputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
        mask: torch.Tensor,
        reg_rows: torch.Tensor | None,
        index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """``L = L_task + α·L_MAD + β·L_MAR`` for one batch (SPEC §1), plus the fusion's
        auxiliary terms (``method.aux_weight``) for RFNet / mmFormer.

        ``reg_rows``: the indices of the samples whose mask is in Ω (the regularization
        head's batch), or None while MAR is inactive.

        Returns the loss, its detached terms and the detached deployment logits.
        """
        method = self.cfg.method
        out = self.model.fuse(self.model.encode(inputs), mask)
        task_loss = self.task_loss(out.logits, labels) + self.side_loss(self.model.head, labels)
        loss = task_loss
        terms = {"loss_task": task_loss.detach()}

        auxiliary = getattr(self.model.fusion, "auxiliary_loss", None)
        if auxiliary is not None and method.aux_weight > 0:
            # RFNet's / mmFormer's own terms (per-modality heads, region supervision)
            aux_loss = auxiliary(labels, self.data.ignore_index)
            if aux_loss is not None:
                loss = loss + method.aux_weight * aux_loss
                terms["loss_aux"] = aux_loss.detach()

        if self.teacher is not None:
            teacher_out = self.teacher_outputs(inputs, index)
            fused = self.mad_on_fused
            distill = mad_loss(
                fused_map(out.fused) if fused else out.features,
                fused_map(teacher_out.fused) if fused else teacher_out.features,
                teacher_out.logits,
                relation=method.mad.relation,
                weighting="uniform" if method.distill == "sp" else method.mad.weighting,
                granularity=method.mad.granularity,
            )
            loss = loss + method.alpha * distill
            terms["loss_mad"] = distill.detach()

        if reg_rows is not None:
            # L_MAR is the mean over the Ω samples, 0 when there are none. A single vector
            # sample is skipped: batch normalisation of (1, c) features is undefined.
            count = len(reg_rows)
            vectors = isinstance(out.fused, torch.Tensor) and out.fused.ndim == 2
            if count > 1 or (count == 1 and not vectors):
                reg_input = select_samples(out.fused, reg_rows)
                reg_out = self.model.apply_head(reg_input, "reg_head")
                reg_labels = labels[reg_rows]
                reg_loss = self.task_loss(reg_out.logits, reg_labels) + self.side_loss(
                    self.model.reg_head, reg_labels
                )
                loss = loss + method.beta * reg_loss
                terms["loss_mar"] = reg_loss.detach()
            terms["mar_fraction"] = torch.tensor(count / len(labels))

        terms["loss"] = loss.detach()
        return loss, terms, out.logits.detach()

    # -- MAR mining -----------------------------------------------------------------------

    def mine(self, epoch: int) -> dict[str, Any]:
        """One MAR mining pass (SPEC §4 steps 1-4) after warm-up epoch ``epoch``."""
        assert self.miner is not None
        method = self.cfg.method
        dataset = (
            (self.data.train_eval or self.data.train)
            if method.mar.mining_split == "train"
            else self.data.val
        )
        loader = self._eval_loader(dataset)
        m = len(self.data.modalities)
        masks = [full_mask(m), *drop_one_masks(m)]
        with self.autocast():
            confusions = combination_confusions(
                self.model,
                loader,
                masks,
                self.data.num_classes,
                self.device,
                self.data.ignore_index,
            )
        g = self.miner.update(epoch, confusions.sum(dim=1))  # predicted-label counts, (m+1, k)
        row: dict[str, Any] = {
            f"mar_g/{name}": float(value)
            for name, value in zip(self.data.modalities, g, strict=True)
        }
        names = self.model.modalities
        for mask, confusion in zip(masks, confusions, strict=True):
            row[f"mine_acc/{names.mask_name(mask)}"] = (
                100.0 * float(confusion.diag().sum()) / float(confusion.sum())
            )
        if self.miner.omega is not None:
            row["omega"] = ";".join(names.mask_name(mask) for mask in self.miner.omega)
        if distributed.is_main():
            atomic_write_json(self.run_dir / "miner.json", self.miner_summary())
        return row

    # -- evaluation -----------------------------------------------------------------------

    def test(self, split: str = "test") -> dict[str, Any]:
        """Evaluate every combination on ``split`` and write ``results_<split>.json``."""
        with self.autocast():
            results = evaluate_split(self.model, self.data, self.cfg, split, self.device)
        report = {
            "method": self.cfg.method.name,
            "split": split,
            "epoch": self.epoch,
            "code_version": code_version(),
            **results,
        }
        if self.cfg.method.combination:
            report["trained_on"] = self.cfg.method.combination
        if self.miner is not None:
            report["omega"] = self.miner_summary()["omega"]
        if distributed.active():
            report["distributed"] = self._check_ranks_agree()
        if not distributed.is_main():
            return report
        if self.data.task == "segmentation" and split == "test":
            self.save_prediction_panels()
        if self.data.skipped:
            report["skipped"] = list(self.data.skipped)
            print(
                f"mmanet: skipped {len(self.data.skipped)} unreadable samples "
                f"(listed in {self.run_dir / f'results_{split}.json'})"
            )
        atomic_write_json(self.run_dir / f"results_{split}.json", report)
        return report

    def _check_ranks_agree(self) -> dict[str, Any]:
        """Every process's Ω and weight digest; an error if the processes have diverged."""
        digest = hashlib.sha256()
        for value in self.model.state_dict().values():
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        omega = self.miner_summary()["omega"] if self.miner is not None else None
        ranks = distributed.all_gather_object({"omega": omega, "weights": digest.hexdigest()})
        if any(r != ranks[0] for r in ranks):
            raise RuntimeError(f"data-parallel processes diverged: {ranks}")
        return {"world_size": self.world_size, "ranks": ranks}

    @torch.no_grad()
    def save_prediction_panels(self, count: int = 3) -> None:
        """``predictions/sample-<i>.png``: RGB | depth | ground truth | each combination."""
        from mmanet.segmentation_images import save_prediction_panel

        if set(self.data.modalities) != {"rgb", "depth"}:
            return
        self.model.eval()
        names = self.model.modalities
        masks = torch.tensor(names.combinations, dtype=torch.float32, device=self.device)
        for index in range(min(count, len(self.data.test))):
            inputs, labels = self.data.test[index]
            batch = {k: v[None].to(self.device) for k, v in inputs.items()}
            logits = self.model.predict_masks(self.model.encode(batch), masks)  # (c, 1, k, h, w)
            predictions = {
                names.mask_name(mask): logits[i, 0].argmax(0).cpu()
                for i, mask in enumerate(names.combinations)
            }
            save_prediction_panel(
                self.run_dir / "predictions" / f"sample-{index}.png",
                inputs["rgb"],
                inputs["depth"],
                labels,
                predictions,
            )

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        """This process's shard of ``dataset`` (all of it without data parallelism)."""
        return make_loader(
            distributed.shard(dataset), self.cfg.data.eval_batch_size, self.cfg.data.num_workers
        )

"""The one training loop for every method: epochs, checkpoints, resume, signals, data
parallelism, logging and the calls to evaluation.

What a batch's loss is belongs to the method (:class:`~mmanet.engine.objective.Objective`)
and MAR's mining to its epoch-end hook (:class:`~mmanet.engine.mining.Mining`); the loop
knows neither MAD nor MAR.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from mmanet.config import Config, save_config, to_dict
from mmanet.data import DataBundle, build_data
from mmanet.data.base import IndexedDataset
from mmanet.engine import distributed, rng
from mmanet.engine.advice import Advisor, resolve_batch_size
from mmanet.engine.checkpoint import (
    keep_best,
    latest_checkpoint,
    load_into,
    load_training_state,
    read_run_record,
    resolve_checkpoint,
    save_checkpoint,
    write_run_record,
)
from mmanet.engine.curves import training_curves
from mmanet.engine.evaluate import evaluate_split
from mmanet.engine.loader import make_loader
from mmanet.engine.logger import EpochStatistics, RunLogger, epoch_line
from mmanet.engine.mining import Mining, omega_source
from mmanet.engine.network import PYTHON_BUILDER
from mmanet.engine.objective import Objective, needs_reg_head
from mmanet.engine.results import check_ranks_agree, run_report, write_results
from mmanet.engine.rundir import as_recorded, clear, prepare, run_record, summary
from mmanet.engine.selection import Validation
from mmanet.engine.signals import stop_on_signals
from mmanet.engine.step import TrainingStep, autocast, check_batch, training_samples
from mmanet.engine.teacher import teacher_for_run
from mmanet.errors import CheckpointError, TrainingInterrupted
from mmanet.methods import method_network
from mmanet.models import Builder, build_model
from mmanet.progress import show_progress
from mmanet.provenance import code_version
from mmanet.tasks import build_task


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Trains one method on one dataset into ``config.out``; resumable at epoch boundaries.

    Args:
        config: the run's configuration.
        data: the dataset (default: the one ``config.data`` names).
        model: a builder for the network when it is not a registered one (e.g.
            :func:`mmanet.models.from_encoders`); the teacher is built with it too.
    """

    def __init__(
        self, config: Config, data: DataBundle | None = None, model: Builder | None = None
    ) -> None:
        self.cfg = config
        self.run_dir = Path(config.out)
        code_version()  # recorded as of the start of the run (cached)
        self.device = distributed.setup(resolve_device(config.device))
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        self.data = data if data is not None else build_data(config.data)
        self.builder = model
        method, modalities = config.method, self.data.modalities
        self.task = build_task(self.data, config).to(self.device)
        torch.manual_seed(config.seed)
        self.model = build_model(
            config.model,
            modalities,
            self.data.input_shapes,
            self.data.num_classes,
            reg_head=needs_reg_head(method),
            builder=model,
        )
        self.model = method_network(self.model, method).to(self.device)  # e.g. DMRNet's head
        self.data_generator = torch.Generator().manual_seed(config.seed + 2)
        train = training_samples(config, self.data)  # e.g. the complete ones, for a teacher
        # data.batch_size=auto becomes a number here, so config.yaml records what ran
        config, self.batch_note = resolve_batch_size(config, len(train) // self.world_size)
        self.cfg = config = as_recorded(config)  # imports: files as absolute paths
        check_batch(config, self.model, len(train) // self.world_size)
        self.train_sampler = (
            DistributedSampler(train, shuffle=True, seed=config.seed, drop_last=True)
            if distributed.active()
            else None
        )
        teacher = teacher_for_run(config, train, self.data.modalities, self.device, model)
        self.objective = Objective(self.model, self.task, method, teacher)
        self.train_loader = make_loader(
            IndexedDataset(train) if method.cache_teacher else train,
            config.data.batch_size,  # per process
            config.data.num_workers,
            shuffle=self.train_sampler is None,
            generator=self.data_generator,
            drop_last=len(train) > config.data.batch_size * self.world_size,
            sampler=self.train_sampler,
            pin_memory=self.device.type == "cuda",
        )
        self.step = TrainingStep(
            config, self.objective, modalities, self.device, len(self.train_loader)
        )
        if config.data.corrupt:  # training-time corruption (docs/evaluation.md)
            from mmanet.corruption_eval import training_corruption

            self.step.corrupt = training_corruption(self.data, config.data, config.seed)
        # Ω: the regularizer's, or the one a loss term asks for (DMRNet's mined hard set)
        self.mining = Mining(method, modalities) if omega_source(method) != "none" else None
        self.advisor = Advisor(method, distributed.is_main())  # the run's warnings
        self.validation = Validation(
            config.validation, self.task, config.optim.epochs, method, modalities
        )
        self.train = train
        self.epoch = 0  # completed epochs
        self.partial_steps = 0  # steps of epoch + 1 already done (an interrupted epoch)
        self.interrupt: int | None = None  # the signal that asked the run to stop
        self.logger: RunLogger | None = None
        # called as on_validation(epoch, selection value) after each validation and its
        # checkpoint; it may raise to end the run there (mmanet.tune: pruning)
        self.on_validation: Callable[[int, float], None] | None = None
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)

    # -- set-up ---------------------------------------------------------------------------

    def autocast(self) -> torch.autocast:
        return autocast(self.device, self.cfg.precision)

    def meta(self) -> dict[str, Any]:
        """What a checkpoint records besides its weights: enough to rebuild the network."""
        return {
            "format": "mmanet-checkpoint-1",
            "code_version": code_version(),
            "method": self.cfg.method.name,
            "task": self.task.name,
            "modalities": list(self.data.modalities),
            "input_shapes": {k: list(v) for k, v in self.data.input_shapes.items()},
            "class_names": list(self.data.class_names),
            "builder": "registered" if self.builder is None else PYTHON_BUILDER,
            "miner": self.mining.summary() if self.mining else None,
            "config": to_dict(self.cfg),
        }

    # -- state ----------------------------------------------------------------------------

    def generators(self) -> dict[str, torch.Generator]:
        return {"mask": self.step.mask_generator, "data": self.data_generator}

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, scheduler, miner and random state; under data parallelism the random
        state of every process (``rng_ranks``), gathered — so every process calls this."""
        state = rng.capture(self.generators())
        return {
            "epoch": self.epoch,
            "step": self.partial_steps,
            **self.step.state_dict(),
            "miner": self.mining.state_dict() if self.mining else None,
            "validation": self.validation.state_dict(),
            "rng": state,
            "rng_ranks": distributed.all_gather_object(state) if distributed.active() else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.partial_steps = int(state.get("step", 0))
        self.step.load_state_dict(state)
        if self.mining is not None and state["miner"] is not None:
            self.mining.load_state_dict(state["miner"])
        if state.get("validation"):
            self.validation.load_state_dict(state["validation"])
        ranks = state.get("rng_ranks")
        if ranks and len(ranks) != self.world_size:
            raise CheckpointError(
                f"{self.run_dir}: the checkpoint was written by {len(ranks)} processes, "
                f"this run has {self.world_size}; resume with the same number"
            )
        rng.restore(ranks[self.rank] if ranks else state["rng"], self.generators())

    def save(self, best: bool = False) -> Path | None:
        """Write a checkpoint, keep it as the best too when ``best``, and update the run's
        record (rank 0; every process must call this under data parallelism)."""
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
            record = read_run_record(self.run_dir) or {}
            if best:
                record["best"] = str(keep_best(self.run_dir, path).relative_to(self.run_dir))
            last = str(path.relative_to(self.run_dir))
            teacher = self.objective.teacher.record() if self.objective.teacher else None
            summary_ = run_record(
                self.cfg.method.name, self.epoch, last, record, self.validation, teacher
            )
            if self.advisor.records:
                summary_["warnings"] = self.advisor.records
            write_run_record(self.run_dir, summary_)
        distributed.barrier()  # nobody resumes or moves on before the checkpoint is whole
        return path

    def resume(self) -> None:
        """Continue from the latest complete checkpoint of the run."""
        path = latest_checkpoint(self.run_dir)
        assert path is not None  # rundir.prepare checked
        load_into(self.model, path)
        self.load_state_dict(load_training_state(path))
        self.advisor.restore((read_run_record(self.run_dir) or {}).get("warnings", []))

    # -- training -------------------------------------------------------------------------

    def fit(
        self,
        resume: bool = False,
        stop_after: int | None = None,
        overwrite: bool = False,
        test: bool = True,
    ) -> dict[str, Any] | None:
        """Train to ``optim.epochs`` (or stop after epoch ``stop_after``, or early) and
        evaluate the run's result (the best validated epoch, else the last) on the test
        split. ``resume`` continues the run in ``out``; ``overwrite`` replaces the run
        there; ``test=False`` never touches the test split (tuning: the result is then
        ``self.validation.best``). Returns the test results once training is complete and
        tested, else None."""
        resuming = prepare(self.run_dir, self.cfg, resume, overwrite)
        distributed.barrier()  # every process has checked the folder before anything changes
        if resuming:
            self.resume()
        if distributed.is_main():
            if overwrite and not resuming:
                clear(self.run_dir)
            print(summary(self.cfg, self.data, self.train, str(self.device)), flush=True)
            if self.batch_note:
                print(self.batch_note, flush=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            self.logger = RunLogger(self.run_dir, self.cfg.tensorboard)
            if resume:
                self.logger.resume(self.epoch)
        distributed.barrier()
        self.check_training_set()
        failed_start = False  # failed before its first checkpoint: then it leaves no trace
        try:
            with stop_on_signals(self.request_stop):
                self._train_epochs(stop_after)
        except Exception:
            failed_start = not resuming and latest_checkpoint(self.run_dir) is None
            raise
        finally:
            if self.logger is not None:
                self.logger.close()
                if failed_start:
                    clear(self.run_dir)
                else:
                    training_curves(self.logger.rows, self.run_dir / "curves.png")
        if not test or (self.epoch < self.cfg.optim.epochs and not self.validation.should_stop):
            return None
        result = resolve_checkpoint(self.run_dir, "best" if self.validation.enabled else "last")
        if self.validation.enabled:
            load_into(self.model, result)  # the run's result
        return self.test(epoch=self.validation.best_epoch, checkpoint=result)

    def _train_epochs(self, stop_after: int | None) -> None:
        for epoch in range(self.epoch + 1, self.cfg.optim.epochs + 1):
            row = self.train_epoch(epoch, skip=self.partial_steps)
            if self.interrupt is not None:  # stopped between two steps of this epoch
                self.partial_steps += row["steps"]
                raise TrainingInterrupted(self.interrupt, self.save())
            self.epoch, self.partial_steps = epoch, 0
            distributed.broadcast_buffers(self.model)
            if self.mining is not None:
                row.update(self.mine(epoch))
            self.advisor.epoch_end(row, epoch)  # a loss term that dwarfs the task loss
            best, value = False, None
            if self.validation.due(epoch):
                validated, best = self.validation.record(epoch, self.test("val", write=False))
                value = validated[self.validation.key]  # the value that selects
                row.update(validated)
            if self.logger is not None:
                self.logger.log(row)
                if not show_progress(self.cfg.progress):  # a redirected log: a line per epoch
                    best_key = self.validation.key if best else None
                    print(epoch_line(row, self.cfg.optim.epochs, best_key), flush=True)
            self.save(best)
            if value is not None and self.on_validation is not None:
                self.on_validation(epoch, value)
            if self.validation.should_stop or (stop_after is not None and epoch >= stop_after):
                break

    def check_training_set(self) -> None:
        """Warn (once per run) when the training split gives few steps per epoch."""
        batch, samples = self.cfg.data.batch_size, len(self.train) // self.world_size
        assert isinstance(batch, int)  # resolved in __init__
        dropped = samples % batch if self.train_loader.drop_last else 0
        self.advisor.small_training_set(samples, batch, len(self.train_loader), dropped)

    def request_stop(self, signum: int) -> None:
        """Stop after the current step (a signal arrived): save and raise
        :class:`TrainingInterrupted`."""
        self.interrupt = signum

    def mine(self, epoch: int) -> dict[str, Any]:
        """MAR's epoch-end hook (paper Eqs. 9-13); writes ``miner.json`` when it mined."""
        assert self.mining is not None
        with self.autocast():
            row = self.mining.after_epoch(
                epoch, self.model, self.data, self.task, self.device, self.cfg.data
            )
        if row and distributed.is_main():
            self.mining.write_summary(self.run_dir)
        return row

    def train_epoch(self, epoch: int, skip: int = 0) -> dict[str, Any]:
        """One pass over the training split (its last ``len - skip`` batches when ``skip``
        steps of it were done before an interruption); returns the epoch's log row."""
        cfg = self.cfg
        self.model.train()
        omega = self.mining.omega_lookup() if self.mining is not None else None  # on the host
        statistics = EpochStatistics(self.model.modalities, self.device)
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)
        start = time.perf_counter()
        steps = len(self.train_loader) - skip
        bar = tqdm(
            itertools.islice(self.train_loader, steps),
            total=steps,
            desc=f"{cfg.method.name} epoch {epoch}/{cfg.optim.epochs}",
            leave=False,
            disable=not show_progress(cfg.progress) or not distributed.is_main(),
            dynamic_ncols=True,
        )
        for step, (inputs, labels) in enumerate(bar):
            done = self.step(inputs, labels, omega, epoch, skip + step + 1)
            if done is None:
                statistics.skipped += 1
                continue
            terms, logits, labels, mask = done
            statistics.add(terms, self.task.sample_accuracy(logits, labels), mask)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{terms['loss'].item():.3f}")
            if self.interrupt is not None:
                steps = step + 1
                break
        lr = self.step.optimizer.param_groups[0]["lr"]
        return {
            "epoch": epoch,
            "lr": lr,
            **statistics.row(),
            "steps": steps,
            "epoch_seconds": time.perf_counter() - start,
        }

    # -- evaluation -----------------------------------------------------------------------

    def test(
        self,
        split: str = "test",
        write: bool = True,
        epoch: int | None = None,
        checkpoint: Path | None = None,
    ) -> dict[str, Any]:
        """Evaluate every combination on ``split`` and (``write``) write
        ``results_<split>.json``; ``epoch``: the epoch of the weights (default: the last),
        ``checkpoint``: the checkpoint folder they were loaded from, recorded in the report."""
        loading = self.cfg.data
        with self.autocast():
            results = evaluate_split(
                self.model,
                self.data,
                self.task,
                split,
                self.device,
                loading.eval_batch_size,
                loading.num_workers,
            )
        omega = self.mining.summary()["omega"] if self.mining is not None else None
        report = run_report(self.cfg, split, self.epoch if epoch is None else epoch, results, omega)
        if checkpoint is not None:
            report["checkpoint"] = str(checkpoint.relative_to(self.run_dir))
        if distributed.active():
            report["distributed"] = check_ranks_agree(self.model, omega)
        if not distributed.is_main() or not write:
            return report
        if split == "test":
            self.task.write_examples(self.run_dir, self.model, self.data, self.device)
        return write_results(self.run_dir, split, report, self.data.skipped)

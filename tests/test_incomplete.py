"""Samples that lack modalities: the seeded missing-at-random tables, masks drawn within
what a sample has, the teacher's and MAR's complete samples, MAD over the complete rows,
and evaluation per combination over the samples that have it (with n), plus "as
available"."""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import evaluation, fast_overrides
from mmanet.config import build_config
from mmanet.data import build_data, collate
from mmanet.data.base import AVAILABLE_KEY
from mmanet.data.missing import WithMissing, missing_at_random
from mmanet.engine import Trainer, evaluate_split
from mmanet.engine.step import training_samples
from mmanet.experiment import demo_config_path
from mmanet.modality import MaskSampler, all_masks
from mmanet.tasks import ClassificationTask

VIEWS = "[fou,kar,mor]"


def config(out, **extra):
    settings = {"data.modalities": VIEWS, "optim.warmup_epochs": 0, **extra}
    return build_config(demo_config_path(), fast_overrides(out, **settings))


@pytest.fixture(scope="module")
def incomplete():
    """The three-view data, 40 % of the training samples incomplete."""
    return build_data(config("unused", **{"data.missing_fraction": 0.4}).data)


# -- the tables ------------------------------------------------------------------------


def test_a_fraction_makes_that_many_samples_lack_a_proper_subset():
    table = missing_at_random(1000, 3, fraction=0.3, seed=5)
    kept = table.sum(dim=1)
    assert int((kept < 3).sum()) == 300  # exactly the fraction, incomplete
    assert int(kept.min()) >= 1  # never a sample with nothing
    rows = {tuple(int(b) for b in row) for row in table[kept < 3].tolist()}
    assert rows == {m for m in all_masks(3) if sum(m) < 3}  # every proper subset occurs
    assert torch.equal(table, missing_at_random(1000, 3, fraction=0.3, seed=5))  # seeded
    assert not torch.equal(table, missing_at_random(1000, 3, fraction=0.3, seed=6))


def test_rates_are_independent_per_modality_and_never_leave_nothing():
    table = missing_at_random(20000, 3, rates=[0.5, 0.2, 0.0], seed=0)
    missing = 1 - table.float().mean(dim=0)
    assert abs(float(missing[1]) - 0.2) < 0.02 and float(missing[2]) == 0.0
    assert abs(float(missing[0]) - 0.5) < 0.02
    both = missing_at_random(20000, 2, rates=[0.6, 0.6], seed=1)
    assert bool(both.any(dim=1).all())  # a sample left with none keeps one
    # keeping one of two: rows with exactly one modality = 2·0.6·0.4 + 0.6² = 0.84
    assert abs(float((both.sum(1) == 1).float().mean()) - 0.84) < 0.02


def test_the_view_zeroes_what_a_sample_lacks_in_both_fetch_paths(incomplete):
    train = incomplete.train
    assert isinstance(train, WithMissing) and isinstance(
        incomplete.availability(train), torch.Tensor
    )
    table = incomplete.availability(train)
    row = int((~table.all(dim=1)).nonzero()[0])
    inputs, _ = train[row]
    for i, name in enumerate(incomplete.modalities):
        assert bool((inputs[name] != 0).any()) == bool(table[row, i])
    assert torch.equal(inputs[AVAILABLE_KEY], table[row].float())
    batched, _ = collate(train.__getitems__([row, 0, 1]))
    single, _ = collate([train[i] for i in (row, 0, 1)])
    for key in single:
        assert torch.equal(batched[key], single[key]), key
    assert bool(incomplete.availability(incomplete.test).all())  # val and test stay complete


# -- training ----------------------------------------------------------------------------


def test_masks_are_drawn_among_the_subsets_of_what_a_sample_has():
    sampler = MaskSampler(3)
    available = torch.tensor([[1.0, 0.0, 1.0]] * 6000)
    masks = sampler.sample(6000, torch.Generator().manual_seed(0), available)
    drawn = {tuple(int(b) for b in row): 0 for row in masks.tolist()}
    for row in masks.tolist():
        drawn[tuple(int(b) for b in row)] += 1
    assert set(drawn) == {(1, 0, 0), (0, 0, 1), (1, 0, 1)}
    assert all(abs(count / 6000 - 1 / 3) < 0.03 for count in drawn.values())  # uniformly
    weighted = MaskSampler(3, [1, 0, 0, 0, 0, 0, 0])  # only "fou" has weight
    with pytest.raises(ValueError, match="sample 0 of the batch has no combination"):
        weighted.sample(1, torch.Generator(), torch.tensor([[0.0, 1.0, 1.0]]))
    complete = torch.ones(50, 3)
    plain = sampler.sample(50, torch.Generator().manual_seed(3))
    assert torch.equal(sampler.sample(50, torch.Generator().manual_seed(3), complete), plain)


def test_the_teacher_trains_on_the_complete_samples_and_students_on_all(tmp_path, incomplete):
    table = incomplete.availability(incomplete.train)
    complete = int(table.all(dim=1).sum())
    teacher = training_samples(config(tmp_path, **{"method.name": "teacher"}), incomplete)
    assert len(teacher) == complete < len(incomplete.train)
    assert bool(incomplete.availability(teacher).all())
    everything = config(tmp_path, **{"method.name": "teacher", "method.samples": "all"})
    assert len(training_samples(everything, incomplete)) == len(incomplete.train)
    assert training_samples(config(tmp_path), incomplete) is incomplete.train  # sf_md: all
    only = config(tmp_path, **{"method.name": "sf_md", "method.samples": "complete"})
    assert len(training_samples(only, incomplete)) == complete
    custom = config(tmp_path, **{"method.name": "customized", "method.combination": "fou+mor"})
    keep = (table[:, 0] | table[:, 2]).sum()  # samples with at least one of its modalities
    assert len(training_samples(custom, incomplete)) == int(keep)


def test_a_step_draws_within_each_samples_modalities_and_mad_reads_the_complete_rows(
    tmp_path, incomplete
):
    from mmanet.losses import mad_loss

    teacher_dir = tmp_path / "teacher"
    teacher_config = config(teacher_dir, **{"method.name": "teacher", "optim.epochs": 1})
    Trainer(teacher_config, incomplete).fit()
    settings = {"method.name": "sf_mad", "method.teacher": str(teacher_dir)}
    trainer = Trainer(config(tmp_path / "mad", **{**settings, "model.head_dropout": 0}), incomplete)
    train = incomplete.train
    table = incomplete.availability(train)
    rows = [int(r) for r in (~table.all(dim=1)).nonzero()[:6]] + list(range(10))
    inputs, labels = collate([train[i] for i in rows])
    available = inputs.pop(AVAILABLE_KEY)
    complete = available.all(dim=1)
    assert 2 <= int(complete.sum()) < len(rows)

    seen: dict[str, object] = {}

    def everything_it_has(batch_size, generator, available):  # the sampler, recording
        seen["available"] = available
        return available.clone()

    def teacher_batch(module, args, out) -> None:
        seen["teacher_batch"] = len(args[0]["fou"])

    trainer.step.sampler.sample = everything_it_has
    teacher = trainer.objective.teacher
    model = trainer.model.train()
    assert trainer.cfg.method.distill_features == "fused"  # the demo's setting
    student = model.fuse(model.encode(inputs), available).fused
    with torch.no_grad():
        reference = teacher.network({k: v[complete] for k, v in inputs.items()})
    expected = mad_loss(student[complete], reference.fused, reference.logits)
    teacher.network.register_forward_hook(teacher_batch)
    terms, _, _, mask = trainer.step({**inputs, AVAILABLE_KEY: available}, labels, None)
    assert torch.equal(seen["available"], available)  # the sampler saw what each sample has
    assert torch.equal(mask, available)
    assert seen["teacher_batch"] == int(complete.sum())  # the teacher read the complete rows
    torch.testing.assert_close(terms["loss_distill"], expected.detach())


@pytest.mark.parametrize("method", ["teacher", "mmanet"])
def test_training_on_incomplete_data_runs_and_mines_on_complete_samples(
    tmp_path, incomplete, method
):
    if method == "mmanet":
        Trainer(
            config(tmp_path / "t", **{"method.name": "teacher", "optim.epochs": 2}), incomplete
        ).fit()
    extra = {"method.name": method, "optim.epochs": 3, "method.mar.warmup_epochs": 1}
    if method == "mmanet":
        extra["method.teacher"] = str(tmp_path / "t")
    trainer = Trainer(config(tmp_path / method, **extra), incomplete)
    counted = []
    if method == "mmanet":
        update = trainer.mining.regularizer.update
        trainer.mining.regularizer.update = lambda e, c: (
            counted.append([int(confusion.sum()) for confusion in c]) or update(e, c)
        )
    report = trainer.fit()
    assert report["average"]["error"] < 60
    if method == "mmanet":
        complete = int(incomplete.availability(incomplete.train).all(dim=1).sum())
        # mined on the complete samples only, with the full mask and with each drop-one mask
        assert counted == [[complete] * 4]


# -- evaluation --------------------------------------------------------------------------


def test_each_combination_is_evaluated_on_the_samples_that_have_it(tmp_path, incomplete):
    from mmanet.data import DataBundle

    test = incomplete.test
    table = missing_at_random(len(test), 3, fraction=0.5, seed=1)
    data = DataBundle(
        incomplete.train,
        incomplete.val,
        WithMissing(test, incomplete.modalities, table),
        incomplete.modalities,
        incomplete.input_shapes,
        incomplete.class_names,
    )
    trainer = Trainer(config(tmp_path, **{"optim.epochs": 1}), data)
    trainer.fit()
    model = trainer.model.eval()
    report = evaluate_split(model, data, ClassificationTask(data.class_names), "test")
    inputs, labels = collate([test[i] for i in range(len(test))])
    with torch.no_grad():
        for mask in all_masks(3):
            has = (torch.tensor(mask, dtype=torch.bool) <= table).all(dim=1)
            name = model.modalities.mask_name(mask)
            rows = {k: v[has] for k, v in inputs.items()}
            masks = torch.tensor([mask], dtype=torch.float32).expand(int(has.sum()), -1)
            wrong = (model(rows, masks).logits.argmax(1) != labels[has]).float().mean()
            assert report["combinations"][name]["n"] == int(has.sum())
            assert report["combinations"][name]["error"] == pytest.approx(100 * float(wrong))
        own = model(inputs, table.float()).logits.argmax(1)
    as_available = report["as available"]
    assert as_available["n"] == len(test)
    assert as_available["error"] == pytest.approx(100 * float((own != labels).float().mean()))
    full = report["combinations"]["fou+kar+mor"]["n"]
    assert full == int(table.all(dim=1).sum()) < len(test)
    complete_report = evaluate_split(
        model, incomplete, ClassificationTask(data.class_names), "test"
    )
    assert "as available" not in complete_report  # a complete split has no such row
    assert {m["n"] for m in complete_report["combinations"].values()} == {len(test)}
    assert list(itertools.islice(report["combinations"], 1)) == ["fou"]


def test_anti_spoofing_scores_mark_the_samples_that_have_each_combination(tmp_path, incomplete):
    """The score path of the anti-spoofing metrics: which samples each mask is evaluated
    on (its n), and every sample for "as available" (None)."""
    from mmanet.engine.evaluate import combination_scores
    from mmanet.engine.loader import make_loader

    table = missing_at_random(len(incomplete.test), 3, fraction=0.5, seed=1)
    split = WithMissing(incomplete.test, incomplete.modalities, table)
    model = Trainer(config(tmp_path, **{"optim.epochs": 1}), incomplete).model.eval()
    masks = [*all_masks(3), None]
    scores, _labels, eligible = combination_scores(model, make_loader(split, 64, 0), masks)
    for i, mask in enumerate(all_masks(3)):
        has = (torch.tensor(mask, dtype=torch.bool) <= table).all(dim=1)
        assert eligible[i].tolist() == has.tolist()
    assert bool(eligible[-1].all()) and scores.shape[:2] == (len(masks), len(split))


def write_incomplete_manifest(folder, count: int = 180):
    """A manifest of two-modality sensor windows (three activities) where a quarter of the
    rows lack the accelerometer and another quarter the gyroscope, in every split."""
    import numpy as np

    rng = np.random.default_rng(0)
    time = np.linspace(0, 1, 32)
    rows, has = ["accel,gyro,label,split"], []
    for i in range(count):
        label = i % 3
        accel = np.sin(2 * np.pi * (label + 1) * 2 * time) + rng.normal(0, 0.8, (3, 32))
        gyro = (label - 1) * 0.7 + rng.normal(0, 0.8, (3, 32))
        np.save(folder / f"a{i}.npy", accel.astype(np.float32))
        np.save(folder / f"g{i}.npy", gyro.astype(np.float32))
        lacks = (i // 3) % 4  # 0: accel missing, 1: gyro missing, 2-3: complete
        cells = ["" if lacks == 0 else f"a{i}.npy", "" if lacks == 1 else f"g{i}.npy"]
        split = ("train", "train", "train", "val", "test")[(i // 12) % 5]
        rows.append(",".join([*cells, str(label), split]))
        has.append((lacks != 0, lacks != 1, split))
    manifest = folder / "windows.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest, has


@pytest.mark.slow
def test_a_manifest_with_empty_cells_end_to_end(tmp_path, capsys):
    """train the teacher (complete samples) and MMANet (every sample), evaluate with each
    combination's n and the "as available" row, export."""
    import json

    from mmanet.cli import main

    manifest, has = write_incomplete_manifest(tmp_path)
    common = [
        "data.name=manifest",
        f"data.manifest.file={manifest}",
        "optim.epochs=6",
        "optim.warmup_epochs=1",
        "optim.milestones=[5]",
        "optim.lr=0.05",
        "method.mar.warmup_epochs=2",
        "data.batch_size=16",
        "model.encoder.widths=[32]",
        "model.head_widths=[32]",
        "model.head_norm=layer",
        "progress=false",
        "tensorboard=false",
    ]
    teacher, student = tmp_path / "teacher", tmp_path / "mmanet"
    assert main(["train", *common, "method.name=teacher", f"out={teacher}"]) == 0
    printed = capsys.readouterr().out
    train = [h for h in has if h[2] == "train"]
    complete = sum(a and g for a, g, _ in train)
    assert f"samples: train {len(train)} (training on {complete})" in printed
    accel, gyro = sum(a for a, _, _ in train), sum(g for _, g, _ in train)
    n = len(train)
    assert (
        f"training samples with each modality: accel {accel}/{n} ({100 * accel / n:.1f} %), "
        f"gyro {gyro}/{n} ({100 * gyro / n:.1f} %); complete {complete}/{n} "
        f"({100 * complete / n:.1f} %)"
    ) in printed
    args = ["train", *common, "method.name=mmanet", f"method.teacher={teacher}", f"out={student}"]
    assert main(args) == 0
    assert main(["evaluate", "--run", str(student)]) == 0
    table = capsys.readouterr().out
    test = [h for h in has if h[2] == "test"]
    report = evaluation(student)
    counts = {
        "accel": sum(a for a, _, _ in test),
        "gyro": sum(g for _, g, _ in test),
        "accel+gyro": sum(a and g for a, g, _ in test),
    }
    assert {name: m["n"] for name, m in report["combinations"].items()} == counts
    assert report["as available"]["n"] == len(test)
    header = next(line for line in table.splitlines() if line.startswith("Combination"))
    assert header.split()[-1] == "N" and "\nas available " in table
    assert report["as available"]["error"] < 50  # chance: 67 %
    log = [json.loads(line) for line in (student / "log.jsonl").open()]
    assert "omega" in log[1] and all("loss_distill" in row for row in log)
    assert main(["export", "--checkpoint", str(student), "--out", str(tmp_path / "m.onnx")]) == 0
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert max(sidecar["max_abs_difference"].values()) < 1e-3

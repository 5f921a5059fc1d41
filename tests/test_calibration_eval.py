"""Calibration per combination in the evaluation (``mmanet.calibration.calibration_per_mask``
through ``ClassificationTask.evaluate``): ECE, reliability bins and the share of samples
whose confidence rises when a modality is removed, checked against hand computations and
against the engine's own probabilities; the ``evaluate`` command's table and figure."""

from __future__ import annotations

import json

import pytest
import torch

from mmanet.calibration import (
    calibration_per_mask,
    confidence_and_correct,
    expected_calibration_error,
    with_calibration,
)
from mmanet.cli import main
from mmanet.experiment import demo_config_path
from mmanet.testing import TINY

# ------------------------------------------------------------------ by hand


def test_ece_of_five_samples_in_two_bins_by_hand():
    # bin (0, 0.5]: 0.2 (right), 0.5 (wrong, on the edge: the lower bin): conf 0.35,
    #   acc 0.5, |gap| 0.15, weight 2/5
    # bin (0.5, 1]: 0.6 (right), 0.9 (wrong), 0.8 (right): conf 0.7667, acc 0.6667,
    #   |gap| 0.1, weight 3/5
    # ECE = 100 * (2/5 * 0.15 + 3/5 * 0.1) = 12
    ece = expected_calibration_error([0.2, 0.5, 0.6, 0.9, 0.8], [1, 0, 1, 0, 1], 2)
    assert ece == pytest.approx(12.0)


MASKS = [(1, 0), (0, 1), (1, 1)]  # rgb, depth, rgb+depth (the engine's order)


def two_modalities():
    """(3, 4, 2) probabilities of rgb, depth and rgb+depth for four samples.

    Maximum softmax probability per sample (predicted class in brackets):
        rgb        0.60 (0)  0.70 (1)  0.55 (0)  0.80 (1)
        depth      0.90 (0)  0.60 (1)  0.65 (1)  0.70 (1)
        rgb+depth  0.80 (0)  0.75 (1)  0.60 (0)  0.90 (1)
    rgb+depth -> rgb rises for none; -> depth for samples 0 and 2 (0.90 > 0.80, 0.65 > 0.60,
    the latter with another class): 2 of 8 pairs.
    """
    rows = [
        [[0.60, 0.40], [0.30, 0.70], [0.55, 0.45], [0.20, 0.80]],
        [[0.90, 0.10], [0.40, 0.60], [0.35, 0.65], [0.30, 0.70]],
        [[0.80, 0.20], [0.25, 0.75], [0.60, 0.40], [0.10, 0.90]],
    ]
    return torch.tensor(rows), torch.tensor([0, 1, 1, 1])


def test_confidence_rises_with_two_modalities_by_hand():
    scores, labels = two_modalities()
    eligible = torch.ones(3, 4, dtype=torch.bool)
    per_mask, section = calibration_per_mask(scores, labels, eligible, MASKS, num_bins=2)
    assert per_mask[0]["confidence_rises"] is None  # a single modality: nothing to drop
    assert per_mask[1]["confidence_rises"] is None
    assert per_mask[2]["confidence_rises"] == pytest.approx(100 * 2 / 8)
    assert (section["violations"], section["pairs"]) == (2, 8)
    assert section["confidence_rises"] == pytest.approx(25.0)
    assert section["bins"] == 2 and section["tolerance"] == 0.0
    # a tolerance of 0.06 forgives the rise 0.60 -> 0.65 but not 0.80 -> 0.90
    _, tolerant = calibration_per_mask(scores, labels, eligible, MASKS, 2, tolerance=0.06)
    assert (tolerant["violations"], tolerant["pairs"]) == (1, 8)
    # an equal confidence is no rise: a model that ignores a modality never violates
    same = scores[2:3].expand(3, -1, -1)
    _, flat = calibration_per_mask(same, labels, eligible, MASKS, 2)
    assert (flat["violations"], flat["pairs"], flat["confidence_rises"]) == (0, 8, 0.0)


def test_per_mask_ece_and_bins_by_hand():
    scores, labels = two_modalities()
    eligible = torch.ones(3, 4, dtype=torch.bool)
    per_mask, _ = calibration_per_mask(scores, labels, eligible, MASKS, num_bins=2)
    # rgb+depth: all four confidences in (0.5, 1]; mean 0.7625; right: 0, 1, 3 -> 0.75
    full = per_mask[2]
    assert full["ece"] == pytest.approx(100 * abs(0.75 - 0.7625))
    assert full["reliability"]["count"] == [0, 4]
    assert full["reliability"]["confidence"][0] is None
    assert full["reliability"]["confidence"][1] == pytest.approx(0.7625)
    assert full["reliability"]["accuracy"] == [None, 0.75]
    # rgb: samples 0, 1 and 3 right, 2 wrong; all in (0.5, 1], mean confidence 0.6625
    assert per_mask[0]["ece"] == pytest.approx(100 * abs(0.75 - 0.6625))


def test_only_pairs_with_both_combinations_count_and_as_available_has_none():
    scores, labels = two_modalities()
    masks = [*MASKS, None]
    scores = torch.cat([scores, scores[2:3]])  # "as available": the full combination's
    # sample 0 lacks depth: it has neither depth nor rgb+depth, and pairs only where both
    eligible = torch.tensor(
        [[1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool
    )
    per_mask, section = calibration_per_mask(scores, labels, eligible, masks, num_bins=2)
    assert (section["violations"], section["pairs"]) == (1, 6)  # sample 2 -> depth
    assert per_mask[2]["confidence_rises"] == pytest.approx(100 / 6)
    assert per_mask[3]["confidence_rises"] is None
    assert per_mask[3]["ece"] == pytest.approx(100 * abs(0.75 - 0.7625))  # all four
    # rgb+depth over samples 1-3: confidences 0.75, 0.60, 0.90 (mean 0.75), 2 of 3 right
    assert per_mask[2]["ece"] == pytest.approx(100 * abs(2 / 3 - 0.75))
    assert sum(per_mask[1]["reliability"]["count"]) == 3  # depth: samples 1-3


class ScoresOnly:
    """The engine's passes, reduced to given probabilities."""

    def __init__(self, scores, labels, eligible):
        self.outputs = (scores, labels, eligible)

    def scores(self, loader, masks):
        return self.outputs


def test_classification_metrics_and_n_from_the_scores_by_hand():
    from mmanet.tasks.classification import ClassificationTask

    scores, labels = two_modalities()
    scores[0, 2] = torch.tensor([0.5, 0.5])  # a tie: the first class, as the argmax's
    eligible = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)
    task = ClassificationTask(["a", "b"])
    evaluated = task.evaluate(ScoresOnly(scores, labels, eligible), None, MASKS)
    rgb, depth, full = evaluated.per_mask
    # rgb: 0 right, 1 right, 2 (tie -> class 0, label 1) wrong, 3 right
    assert (rgb["error"], rgb["accuracy"], rgb["n"]) == (25.0, 75.0, 4)
    # depth over samples 1-3: all predict 1, all labelled 1
    assert (depth["error"], depth["n"]) == (0.0, 3)
    # rgb+depth over samples 1-3: 1 right, 2 wrong (predicts 0), 3 right
    assert full["error"] == pytest.approx(100 / 3) and full["n"] == 3
    assert evaluated.sections["calibration"]["pairs"] == 6


def test_with_calibration_adds_the_keys_and_the_section():
    scores, labels = two_modalities()
    eligible = torch.ones(3, 4, dtype=torch.bool)
    metrics = [{"acer": 1.0, "n": 4}, {"acer": 2.0, "n": 4}, {"acer": 3.0, "n": 4}]
    evaluated = with_calibration(metrics, scores, labels, eligible, MASKS, num_bins=2)
    assert [row["acer"] for row in evaluated.per_mask] == [1.0, 2.0, 3.0]
    assert {"ece", "confidence_rises", "reliability"} <= set(evaluated.per_mask[0])
    assert evaluated.sections["calibration"]["pairs"] == 8
    other = with_calibration(metrics, scores, labels, eligible, MASKS, sections={"det": {}})
    assert list(other.sections) == ["det", "calibration"]
    with pytest.raises(ValueError, match="2 per-mask results for 3 masks"):
        with_calibration(metrics[:2], scores, labels, eligible, MASKS)


def test_many_combinations_are_grouped_in_the_table_and_pooled_in_the_figure():
    from mmanet.modality import Modalities
    from mmanet.reliability_figure import calibration_table, panels

    names = Modalities(["a", "b", "c", "d", "e"])
    masks = names.combinations  # 31
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(len(masks), 20, 3, generator=generator).softmax(dim=2)
    labels = torch.randint(0, 3, (20,), generator=generator)
    eligible = torch.ones(len(masks), 20, dtype=torch.bool)
    per_mask, section = calibration_per_mask(scores, labels, eligible, masks, num_bins=5)
    report = {
        "combinations": {names.mask_name(m): r for m, r in zip(masks, per_mask, strict=True)},
        "calibration": section,
    }
    titles = [title for title, _ in panels(report)]
    assert titles == ["a+b+c+d+e", "a", "b", "c", "d", "e", "the other 25 pooled"]
    pooled = panels(report)[-1][1]
    assert sum(pooled["count"]) == 25 * 20
    rest = [r["reliability"] for m, r in zip(masks, per_mask, strict=True) if 1 < sum(m) < 5]
    b = max(range(5), key=lambda b: pooled["count"][b])  # a bin that holds samples
    weighted = sum(d["count"][b] * d["confidence"][b] for d in rest if d["count"][b])
    assert pooled["confidence"][b] == pytest.approx(weighted / pooled["count"][b])
    table = calibration_table(report).splitlines()
    assert table[2].startswith("1 modality (mean of 5)") and table[2].endswith("-")
    assert any(line.startswith("5 modalities (mean of 1)") for line in table)
    rises = [per_mask[i]["confidence_rises"] for i, m in enumerate(masks) if sum(m) > 1]
    assert table[-1].split()[-1] == f"{sum(rises) / len(rises):.2f}"


# ------------------------------------------------------------------ through a run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration") / "run"
    overrides = [o for o in TINY if not o.startswith("data.modalities")]
    args = ["train", "--config", str(demo_config_path()), *overrides]
    assert main([*args, "data.modalities=[fou,kar]", "optim.epochs=2", f"out={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def evaluated(run):
    """``mmanet evaluate`` of the run on its test split: the JSON, its path and the output."""
    with pytest.MonkeyPatch.context() as patch:
        import io
        import sys

        printed = io.StringIO()
        patch.setattr(sys, "stdout", printed)
        assert main(["evaluate", "--run", str(run)]) == 0
    found = sorted((run / "evaluations").glob("test-*.json"))
    assert len(found) == 1
    return json.loads(found[0].read_text()), found[0], printed.getvalue()


@pytest.fixture(scope="module")
def engine_outputs(run):
    """The run's network on its test split, batched as the evaluation batches it: the
    engine's probabilities and its confusions."""
    from mmanet.config import build_config
    from mmanet.data import build_data
    from mmanet.engine import load_network
    from mmanet.engine.evaluate import combination_counts, combination_scores
    from mmanet.engine.loader import make_loader
    from mmanet.tasks import build_task

    config = build_config(run / "config.yaml")
    data = build_data(config.data)
    model, _ = load_network(run, modalities=data.modalities, model=config.model)
    task = build_task(data, config)
    masks = list(model.modalities.combinations)
    loader = make_loader(data.split("test"), config.data.eval_batch_size, 0)
    names = [model.modalities.mask_name(m) for m in masks]
    scores = combination_scores(model, loader, masks)
    return names, scores, combination_counts(model, loader, masks, task)


def test_the_json_ece_is_the_engines_probabilities_by_hand(evaluated, engine_outputs):
    report, _, printed = evaluated
    names, (scores, labels, eligible), _ = engine_outputs
    assert names == ["fou", "kar", "fou+kar"] and bool(eligible.all())
    table = printed.split("calibration (%):")[1].splitlines()
    for i, name in enumerate(names):
        conf, correct = confidence_and_correct(scores[i], labels)
        by_hand = expected_calibration_error(conf, correct, 15)
        assert report["combinations"][name]["ece"] == pytest.approx(by_hand, rel=1e-12)
        row = next(line.split() for line in table if line.split()[:1] == [name])
        assert row[1] == f"{by_hand:.2f}"
    full = scores[2].amax(dim=1)
    rises = int((scores[0].amax(dim=1) > full).sum() + (scores[1].amax(dim=1) > full).sum())
    section = report["calibration"]
    assert (section["violations"], section["pairs"]) == (rises, 2 * len(labels))
    assert report["combinations"]["fou+kar"]["confidence_rises"] == pytest.approx(
        100 * rises / (2 * len(labels))
    )
    assert f"in {section['confidence_rises']:.2f} % of the" in printed
    assert f"({rises} of {section['pairs']})" in printed


def test_the_evaluation_writes_the_figure(evaluated):
    _, path, printed = evaluated
    figure = path.with_name(f"{path.stem}-reliability.png")
    assert figure.stat().st_size > 0 and f"reliability diagrams: {figure}" in printed


def test_no_figures_writes_none(run, evaluated, capsys):
    assert main(["evaluate", "--run", str(run), "--no-figures", "--split", "val"]) == 0
    printed = capsys.readouterr().out
    assert "calibration (%):" in printed and "reliability diagrams" not in printed
    assert list((run / "evaluations").glob("val-*.json"))
    assert not list((run / "evaluations").glob("val-*-reliability.png"))


def test_the_metrics_are_the_confusions_of_the_counting_pass(evaluated, engine_outputs):
    from mmanet.metrics import classification_metrics

    report, _, _ = evaluated
    names, (_, labels, _), (confusions, samples) = engine_outputs
    for name, confusion, count in zip(names, confusions, samples, strict=True):
        row = report["combinations"][name]
        expected = classification_metrics(confusion)
        assert row["error"] == expected["error"] and row["accuracy"] == expected["accuracy"]
        assert row["n"] == int(count) == len(labels)


def test_the_training_report_has_it_and_the_averages_read_scalars_only(run):
    from mmanet.report import aggregate

    report = json.loads((run / "results_test.json").read_text())
    assert report["calibration"]["pairs"] > 0
    aggregated = aggregate([report])
    assert set(aggregated["fou+kar"]) == {"error", "accuracy", "n", "ece", "confidence_rises"}
    assert set(aggregated["fou"]) == {"error", "accuracy", "n", "ece"}  # no rises: None
    assert set(report["average"]) == set(report["single_average"]) == {"error", "accuracy", "ece"}
    # two seeds: every scalar has a mean and a std (a NaN would break the std)
    assert aggregate([report, report])["fou+kar"]["confidence_rises"]["std"] == 0.0

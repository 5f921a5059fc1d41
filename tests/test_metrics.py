"""Confusion matrices, error rates and APCER/BPCER/ACER (docs/method.md#metrics)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmanet.metrics import classification_metrics, confusion_matrix, summarize

# Two-class hand case: (label, prediction) pairs
#   label 0: predicted 0, 1          -> row 0 = [1, 1]
#   label 1: predicted 1, 0, 1, 1    -> row 1 = [1, 3]
LABELS = [0, 0, 1, 1, 1, 1]
PREDICTIONS = [0, 1, 1, 0, 1, 1]
CONFUSION = [[1, 1], [1, 3]]


def test_confusion_matrix_two_classes():
    confusion = confusion_matrix(torch.tensor(PREDICTIONS), torch.tensor(LABELS), 2)
    assert confusion.tolist() == CONFUSION


def test_confusion_matrix_rows_are_true_classes():
    predictions = torch.tensor([2, 2, 0, 1, 1, 2, 0])
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 2])
    expected = [
        [1, 0, 2],  # class 0: predicted 2, 2, 0
        [0, 1, 0],  # class 1: predicted 1
        [1, 1, 1],  # class 2: predicted 1, 2, 0
    ]
    assert confusion_matrix(predictions, labels, 3).tolist() == expected


def test_confusion_matrix_counts_classes_never_seen_and_any_shape():
    predictions = torch.tensor([[0, 1], [1, 1]])  # e.g. a 2 x 2 label map
    labels = torch.tensor([[0, 1], [0, 1]])
    assert confusion_matrix(predictions, labels, 4).tolist() == [
        [1, 1, 0, 0],
        [0, 2, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]


def test_accuracy_and_error():
    metrics = classification_metrics(torch.tensor(CONFUSION))
    assert metrics["accuracy"] == pytest.approx(100 * 4 / 6)
    assert metrics["error"] == pytest.approx(100 * 2 / 6)
    assert set(metrics) == {"accuracy", "error"}


def test_accuracy_of_three_classes():
    metrics = classification_metrics(torch.tensor([[5, 0, 1], [0, 2, 0], [2, 0, 0]]))
    assert metrics["accuracy"] == pytest.approx(70.0)
    assert metrics["error"] == pytest.approx(30.0)


def test_empty_confusion_gives_nan():
    metrics = classification_metrics(torch.zeros(2, 2, dtype=torch.long), bona_fide_class=1)
    assert all(math.isnan(value) for value in metrics.values())


def test_apcer_bpcer_with_bona_fide_class_one():
    # CASIA-SURF: label 1 = bona fide, label 0 = attack
    metrics = classification_metrics(torch.tensor(CONFUSION), bona_fide_class=1)
    assert metrics["apcer"] == pytest.approx(50.0)  # attacks accepted: 1 of 2
    assert metrics["bpcer"] == pytest.approx(25.0)  # bona fide rejected: 1 of 4
    assert metrics["acer"] == pytest.approx(37.5)
    assert metrics["accuracy"] == pytest.approx(100 * 4 / 6)


def test_apcer_bpcer_with_bona_fide_class_zero():
    metrics = classification_metrics(torch.tensor(CONFUSION), bona_fide_class=0)
    assert metrics["apcer"] == pytest.approx(25.0)  # attacks (label 1) accepted: 1 of 4
    assert metrics["bpcer"] == pytest.approx(50.0)  # bona fide (label 0) rejected: 1 of 2
    assert metrics["acer"] == pytest.approx(37.5)


def test_apcer_bpcer_asymmetric_case():
    # 10 attacks (label 0), 3 accepted; 5 bona fide (label 1), 0 rejected
    confusion = torch.tensor([[7, 3], [0, 5]])
    metrics = classification_metrics(confusion, bona_fide_class=1)
    assert metrics["apcer"] == pytest.approx(30.0)
    assert metrics["bpcer"] == pytest.approx(0.0)
    assert metrics["acer"] == pytest.approx(15.0)
    assert metrics["error"] == pytest.approx(20.0)


def test_apcer_needs_two_classes():
    with pytest.raises(ValueError):
        classification_metrics(torch.eye(3, dtype=torch.long), bona_fide_class=1)


def test_summarize_averages():
    per_combination = {
        "rgb": {"accuracy": 80.0, "error": 20.0},
        "ir": {"accuracy": 60.0, "error": 40.0},
        "rgb+ir": {"accuracy": 91.0, "error": 9.0},
    }
    summary = summarize(per_combination)
    assert summary["average"] == pytest.approx({"accuracy": 77.0, "error": 23.0})
    assert summary["single_average"] == pytest.approx({"accuracy": 70.0, "error": 30.0})


def test_summarize_keeps_every_metric():
    per_combination = {
        "a": {"accuracy": 50.0, "error": 50.0, "apcer": 10.0, "bpcer": 0.0, "acer": 5.0},
        "b": {"accuracy": 70.0, "error": 30.0, "apcer": 20.0, "bpcer": 4.0, "acer": 12.0},
        "a+b": {"accuracy": 90.0, "error": 10.0, "apcer": 0.0, "bpcer": 2.0, "acer": 1.0},
    }
    summary = summarize(per_combination)
    assert set(summary["average"]) == {"accuracy", "error", "apcer", "bpcer", "acer"}
    assert summary["average"]["acer"] == pytest.approx(6.0)
    assert summary["single_average"]["apcer"] == pytest.approx(15.0)


def _brute_force_rates(labels: list[int], predictions: list[int], bona_fide: int):
    attack = 1 - bona_fide
    attacks = bona_fides = accepted = rejected = 0
    for label, prediction in zip(labels, predictions, strict=True):
        if label == attack:
            attacks += 1
            if prediction == bona_fide:
                accepted += 1
        else:
            bona_fides += 1
            if prediction != bona_fide:
                rejected += 1
    apcer = 100.0 * accepted / attacks if attacks else math.nan
    bpcer = 100.0 * rejected / bona_fides if bona_fides else math.nan
    return apcer, bpcer, (apcer + bpcer) / 2


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=40),
    bona_fide=st.integers(0, 1),
)
def test_acer_matches_a_brute_force_count(pairs, bona_fide):
    labels = [label for label, _ in pairs]
    predictions = [prediction for _, prediction in pairs]
    confusion = confusion_matrix(torch.tensor(predictions), torch.tensor(labels), 2)
    metrics = classification_metrics(confusion, bona_fide_class=bona_fide)
    apcer, bpcer, acer = _brute_force_rates(labels, predictions, bona_fide)
    assert _same(metrics["apcer"], apcer)
    assert _same(metrics["bpcer"], bpcer)
    assert _same(metrics["acer"], acer)
    correct = sum(label == prediction for label, prediction in pairs)
    assert metrics["accuracy"] == pytest.approx(100.0 * correct / len(pairs))


def test_binary_confusion_accepts_at_the_threshold():
    from mmanet.metrics import binary_confusion

    scores = torch.tensor([0.9, 0.5, 0.4, 0.7, 0.1])
    labels = torch.tensor([1, 1, 1, 0, 0])  # 1 = bona fide
    # threshold 0.5: bona fide 0.9, 0.5 accepted, 0.4 rejected; attack 0.7 accepted, 0.1 not
    confusion = binary_confusion(scores, labels, bona_fide_class=1, threshold=0.5)
    assert confusion.tolist() == [[1, 1], [1, 2]]
    m = classification_metrics(confusion, bona_fide_class=1)
    assert m["apcer"] == pytest.approx(50.0) and m["bpcer"] == pytest.approx(100 / 3)
    # bona fide = class 0: the same scores now rate class 0
    confusion0 = binary_confusion(scores, 1 - labels, bona_fide_class=0, threshold=0.5)
    assert confusion0.tolist() == [[2, 1], [1, 1]]


def test_equal_error_threshold_balances_apcer_and_bpcer():
    from mmanet.metrics import equal_error_threshold

    # bona fide scores 0.2 0.6 0.8 0.9; attack scores 0.1 0.3 0.7 0.75
    scores = torch.tensor([0.2, 0.6, 0.8, 0.9, 0.1, 0.3, 0.7, 0.75])
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    # t = 0.7: APCER = 2/4 (0.7, 0.75), BPCER = 2/4 (0.2, 0.6) -> equal; every lower
    # candidate has APCER > BPCER, every higher one BPCER > APCER.
    assert equal_error_threshold(scores, labels, 1) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="bona fide and attack"):
        equal_error_threshold(scores[:4], labels[:4], 1)

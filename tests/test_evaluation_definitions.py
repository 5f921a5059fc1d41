"""Hand-computed checks of the evaluation definitions: expected score under sensor failure and
mCE (mmanet.robustness), ISO/IEC 30107-3 operating points (mmanet.operating_points), ECE and
monotonicity violations (mmanet.calibration)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mmanet.calibration import (
    confidence_and_correct,
    expected_calibration_error,
    monotonicity_violations,
    reliability_diagram,
)
from mmanet.modality import Modalities
from mmanet.operating_points import (
    apcer,
    attack_type_apcer,
    bpcer,
    bpcer_at_apcer,
    det_curve,
    eer_threshold,
    hter,
    one_class_decision,
    operating_point,
    threshold_at_apcer,
    worst_attack_apcer,
)
from mmanet.robustness import (
    combination_probabilities,
    corruption_errors,
    expected_score,
    failure_sweep,
)

# ---------------------------------------------------------------- expected score under failure

TWO = ["rgb", "depth"]
TWO_SCORES = {"rgb": 80.0, "depth": 60.0, "rgb+depth": 90.0}
THREE = Modalities(["rgb", "depth", "ir"])
THREE_SCORES = {
    "rgb": 70.0,
    "depth": 60.0,
    "ir": 50.0,
    "rgb+depth": 80.0,
    "rgb+ir": 75.0,
    "depth+ir": 65.0,
    "rgb+depth+ir": 90.0,
}


def test_expected_score_two_modalities():
    # p_rgb = 0.1, p_depth = 0.2:
    #   P(rgb+depth) = 0.9 * 0.8 = 0.72   P(rgb) = 0.9 * 0.2 = 0.18
    #   P(depth)     = 0.1 * 0.8 = 0.08   P(empty) = 0.1 * 0.2 = 0.02
    #   unnormalised = 0.72*90 + 0.18*80 + 0.08*60 = 64.8 + 14.4 + 4.8 = 84.0
    #   expected     = 84.0 / (1 - 0.02) = 85.714285...
    rates = {"rgb": 0.1, "depth": 0.2}
    probabilities, p_empty = combination_probabilities(rates, TWO)
    assert probabilities == pytest.approx({"rgb": 0.18, "depth": 0.08, "rgb+depth": 0.72})
    assert p_empty == pytest.approx(0.02)
    result = expected_score(rates, TWO_SCORES, TWO)
    assert result.unnormalised == pytest.approx(84.0)
    assert result.p_empty == pytest.approx(0.02)
    assert result.expected == pytest.approx(84.0 / 0.98)


def test_expected_score_three_modalities():
    # p = 0.5 for all: every one of the 8 subsets has probability 1/8, P(empty) = 1/8
    #   unnormalised = (70+60+50+80+75+65+90) / 8 = 490 / 8 = 61.25
    #   expected     = 61.25 / (7/8) = 70.0 (the plain mean of the 7 combinations)
    result = expected_score(dict.fromkeys(THREE, 0.5), THREE_SCORES, THREE)
    assert result.unnormalised == pytest.approx(61.25)
    assert result.p_empty == pytest.approx(0.125)
    assert result.expected == pytest.approx(70.0)
    # p_rgb = 0 (never fails), p_depth = p_ir = 0.5: rgb, rgb+depth, rgb+ir, rgb+depth+ir
    # each 1/4, the rest 0:  (70 + 80 + 75 + 90) / 4 = 78.75, P(empty) = 0
    result = expected_score({"rgb": 0.0, "depth": 0.5, "ir": 0.5}, THREE_SCORES, THREE)
    assert result.expected == pytest.approx(78.75)
    assert result.unnormalised == pytest.approx(78.75)
    assert result.p_empty == 0.0


def test_expected_score_reads_nested_tables_in_any_name_order():
    table = {
        "depth+rgb": {"acer": 90.0},  # parts in another order
        "rgb": {"acer": 80.0},
        "depth": {"acer": 60.0},
        "average": {"acer": 0.0},  # not a combination: ignored
    }
    result = expected_score({"rgb": 0.1, "depth": 0.2}, table, TWO, metric="acer")
    assert result.expected == pytest.approx(84.0 / 0.98)


def test_sweep_endpoints():
    rows = failure_sweep(THREE_SCORES, THREE, [0.0, 0.5, 1.0])
    assert [p for p, _, _ in rows] == [0.0, 0.5, 1.0]
    assert rows[0][1:] == (90.0, 0.0)  # p = 0: always the full combination, never undecided
    assert rows[1][1] == pytest.approx(70.0)
    assert rows[1][2] == pytest.approx(0.125)
    assert math.isnan(rows[2][1]) and rows[2][2] == 1.0  # p = 1: no decision is ever made


@pytest.mark.parametrize(
    ("rates", "scores", "message"),
    [
        ({"rgb": 1.5, "depth": 0.1}, TWO_SCORES, "'rgb'"),
        ({"rgb": 0.1, "depth": -0.1}, TWO_SCORES, "'depth'"),
        ({"rgb": 0.1, "depth": float("nan")}, TWO_SCORES, "'depth'"),
        ({"rgb": 0.1}, TWO_SCORES, "'depth' has no failure rate"),
        ({"rgb": 0.1, "depth": 0.1, "ir": 0.1}, TWO_SCORES, "'ir'"),
        ({"rgb": 0.1, "depth": 0.1}, {"rgb": 1.0, "depth": 2.0}, "'rgb\\+depth' is missing"),
    ],
)
def test_expected_score_errors_name_the_culprit(rates, scores, message):
    with pytest.raises(ValueError, match=message) as info:
        expected_score(rates, scores, TWO)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- mean corruption error

ERRORS = {"noise": [10, 20, 30, 40, 50], "blur": [5, 5, 10, 10, 25]}  # sums 150, 55
REFERENCE = {"noise": [20, 30, 40, 50, 60], "blur": [10, 20, 30, 40, 50]}  # sums 200, 150


def test_mean_corruption_error_by_hand():
    result = corruption_errors(ERRORS, 5.0, REFERENCE, 10.0)
    # CE_noise = 150 / 200 = 75 %, CE_blur = 55 / 150 = 36.67 %, mCE = 55.83 %
    assert result.ce == pytest.approx({"noise": 75.0, "blur": 100 * 55 / 150})
    assert result.mce == pytest.approx((75.0 + 100 * 55 / 150) / 2)
    # relative: noise (150 - 5*5) / (200 - 5*10) = 125 / 150; blur (55 - 25) / (150 - 50) = 30 %
    assert result.relative_ce == pytest.approx({"noise": 100 * 125 / 150, "blur": 30.0})
    assert result.relative_mce == pytest.approx((100 * 125 / 150 + 30.0) / 2)
    assert result.mean_error == pytest.approx((150 + 55) / 10)  # over all 10 entries


def test_mean_corruption_error_errors():
    with pytest.raises(ValueError, match="'blur'"):
        corruption_errors(ERRORS, 5.0, {"noise": REFERENCE["noise"]}, 10.0)
    with pytest.raises(ValueError, match="'noise'"):
        corruption_errors({"noise": [1, 2]}, 0.0, REFERENCE, 10.0)
    # a reference that does not degrade leaves the relative CE undefined, not the CE
    result = corruption_errors({"noise": [1.0]}, 0.0, {"noise": [5.0]}, 5.0)
    assert result.ce == {"noise": 20.0} and math.isnan(result.relative_ce["noise"])


# ---------------------------------------------------------------- operating points

# bona_fide_class = 1. Ties: two attacks at 0.5, a bona fide at 0.5, an attack and a bona
# fide at 0.8.
SCORES = [0.1, 0.3, 0.5, 0.5, 0.8, 0.5, 0.6, 0.8, 0.9, 0.95]
LABELS = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
TYPES = ["print", "replay", "print", "mask", "replay", None, None, None, None, None]


@pytest.mark.parametrize(
    ("threshold", "expected_apcer", "expected_bpcer"),
    [
        (0.5, 60.0, 0.0),  # attacks >= 0.5: 0.5, 0.5, 0.8 -> 3/5; bona fide < 0.5: none
        (0.55, 20.0, 20.0),  # attacks: 0.8 -> 1/5; bona fide: 0.5 -> 1/5
        (0.8, 20.0, 40.0),  # attacks: 0.8 (tie accepted) -> 1/5; bona fide: 0.5, 0.6 -> 2/5
        (0.05, 100.0, 0.0),
        (0.99, 0.0, 100.0),
    ],
)
def test_apcer_bpcer_hter_with_ties(threshold, expected_apcer, expected_bpcer):
    assert apcer(SCORES, LABELS, 1, threshold) == pytest.approx(expected_apcer)
    assert bpcer(SCORES, LABELS, 1, threshold) == pytest.approx(expected_bpcer)
    assert hter(SCORES, LABELS, 1, threshold) == pytest.approx(
        (expected_apcer + expected_bpcer) / 2
    )


def test_inputs_torch_numpy_list_and_bona_fide_class_zero():
    flipped = [1 - y for y in LABELS]
    for scores, labels in [
        (torch.tensor(SCORES), torch.tensor(LABELS)),
        (np.array(SCORES), np.array(LABELS)),
    ]:
        assert apcer(scores, labels, 1, 0.5) == pytest.approx(60.0)
    assert apcer(SCORES, flipped, 0, 0.5) == pytest.approx(60.0)
    assert bpcer(SCORES, flipped, 0, 0.8) == pytest.approx(40.0)
    assert math.isnan(apcer([0.4, 0.6], [1, 1], 1, 0.5))  # no attacks: undefined
    with pytest.raises(ValueError, match="0 or 1"):
        apcer(SCORES, [2] * 10, 1, 0.5)


def test_eer_threshold():
    # candidates 0.1, 0.3, 0.5, 0.6: |APCER - BPCER| = 100, 80, 60, 0 -> 0.6
    assert eer_threshold(SCORES, LABELS, 1) == pytest.approx(0.6)
    assert eer_threshold(np.array(SCORES), [1 - y for y in LABELS], 0) == pytest.approx(0.6)
    # 4 attacks (0.1, 0.2, 0.3, 0.7), 2 bona fide (0.4, 0.8): at 0.4 APCER 25 %, BPCER 0 %;
    # at 0.7 APCER 25 %, BPCER 50 % -> |gap| 25 both; the tie goes to the lower threshold
    scores, labels = [0.1, 0.2, 0.3, 0.7, 0.4, 0.8], [0, 0, 0, 0, 1, 1]
    assert eer_threshold(scores, labels, 1) == pytest.approx(0.4)
    # swapping which class is bona fide maps APCER -> 100 - BPCER and BPCER -> 100 - APCER,
    # so |APCER - BPCER| and the EER threshold do not depend on bona_fide_class
    assert eer_threshold(scores, labels, 0) == pytest.approx(0.4)


def test_threshold_at_apcer_5_and_1_percent():
    # 20 attacks at 0.01 .. 0.20; bona fide at 0.15, 0.195, 0.5, 0.9
    attacks = [i / 100 for i in range(1, 21)]
    bona_fide = [0.15, 0.195, 0.5, 0.9]
    scores, labels = attacks + bona_fide, [0] * 20 + [1] * 4
    # 5 %: at most 1 of 20 attacks accepted. The smallest candidate is 0.195 (accepts only
    # the attack at 0.20), below the attack score 0.20 itself; BPCER there = 1/4 (0.15).
    assert threshold_at_apcer(scores, labels, 1, 5.0) == pytest.approx(0.195)
    assert bpcer(scores, labels, 1, 0.195) == pytest.approx(25.0)
    # 1 %: no attack accepted -> the next candidate above 0.20 is 0.5; BPCER = 2/4
    assert threshold_at_apcer(scores, labels, 1, 1.0) == pytest.approx(0.5)
    # test split scored at the validation threshold 0.195
    test = bpcer_at_apcer(
        scores, labels, [0.1, 0.3, 0.18, 0.6], [0, 0, 1, 1], 1, 5.0, ["print", "print"] + [None] * 2
    )
    assert test.threshold == pytest.approx(0.195)
    assert (test.apcer, test.bpcer, test.hter) == pytest.approx((50.0, 50.0, 50.0))
    assert test.worst_attack == "print" and test.worst_attack_apcer == pytest.approx(50.0)


def test_threshold_at_apcer_cannot_split_tied_attacks():
    # attacks tied at 0.5 (two of five): APCER is 60 % at 0.5 and 20 % just above, never 40 %
    assert threshold_at_apcer(SCORES, LABELS, 1, 40.0) == pytest.approx(0.6)
    assert threshold_at_apcer(SCORES, LABELS, 1, 60.0) == pytest.approx(0.5)  # exactly met
    # tied attacks at the top score: the threshold moves just above them
    scores, labels = [0.2, 0.9, 0.9, 0.4, 0.7], [0, 0, 0, 1, 1]
    t = threshold_at_apcer(scores, labels, 1, 34.0)  # 1 of 3 allowed, but 2 are tied at 0.9
    assert t == math.nextafter(0.9, math.inf)
    assert apcer(scores, labels, 1, t) == 0.0
    with pytest.raises(ValueError, match="percentage"):
        threshold_at_apcer(SCORES, LABELS, 1, 105.0)


def test_worst_attack_type():
    # at 0.5: print {0.1, 0.5} -> 50 %, replay {0.3, 0.8} -> 50 %, mask {0.5} -> 100 %
    per_type = attack_type_apcer(SCORES, LABELS, 1, 0.5, TYPES)
    assert per_type == pytest.approx({"print": 50.0, "replay": 50.0, "mask": 100.0})
    assert worst_attack_apcer(SCORES, LABELS, 1, 0.5, TYPES) == ("mask", 100.0)
    # at 0.6: print 0 %, replay 50 %, mask 0 %
    assert worst_attack_apcer(SCORES, LABELS, 1, 0.6, TYPES) == ("replay", 50.0)


def test_det_curve_points_and_monotone():
    points = det_curve(SCORES, LABELS, 1)
    thresholds = [t for t, _, _ in points]
    assert thresholds[:-1] == pytest.approx([0.1, 0.3, 0.5, 0.6, 0.8, 0.9, 0.95])
    assert thresholds[-1] == math.nextafter(0.95, math.inf)
    assert [a for _, a, _ in points] == pytest.approx([100, 80, 60, 20, 20, 0, 0, 0])
    assert [b for _, _, b in points] == pytest.approx([0, 0, 0, 20, 40, 60, 80, 100])
    rng = np.random.default_rng(0)
    scores, labels = rng.random(200).round(2), rng.integers(0, 2, 200)  # many ties
    points = det_curve(scores, labels, 1)
    assert all(p[1] >= q[1] and p[2] <= q[2] for p, q in itertools.pairwise(points))


def test_one_class_flag_is_data():
    assert one_class_decision(SCORES, 0.05) == "bona_fide"
    assert one_class_decision(SCORES, 0.99) == "attack"
    assert one_class_decision(SCORES, 0.1) == "bona_fide"  # the minimum itself is accepted
    assert one_class_decision(SCORES, 0.5) is None
    point = operating_point(SCORES, LABELS, 1, 0.99, TYPES)
    assert point.one_class == "attack" and point.apcer == 0.0 and point.bpcer == 100.0


# ---------------------------------------------------------------- calibration


def test_ece_by_hand_three_bins():
    # bins (0, 1/3], (1/3, 2/3], (2/3, 1]
    #   bin 0: conf 0.2, 0.3 (correct 0, 1)      -> conf 0.25, acc 0.5, gap 0.25, 2 samples
    #   bin 1: conf 0.5 (correct 1)              -> conf 0.5,  acc 1.0, gap 0.5,  1 sample
    #   bin 2: conf 0.8, 0.9, 1.0 (correct 1,1,0) -> conf 0.9, acc 2/3, gap 7/30, 3 samples
    #   ECE = (2*0.25 + 1*0.5 + 3*7/30) / 6 = (0.5 + 0.5 + 0.7) / 6 = 1.7 / 6 = 28.33 %
    conf = [0.2, 0.3, 0.5, 0.8, 0.9, 1.0]
    correct = [0, 1, 1, 1, 1, 0]
    assert expected_calibration_error(conf, correct, 3) == pytest.approx(100 * 1.7 / 6)
    bins = reliability_diagram(torch.tensor(conf), torch.tensor(correct).bool(), 3)
    assert [b.count for b in bins] == [2, 1, 3]
    assert [b.confidence for b in bins] == pytest.approx([0.25, 0.5, 0.9])
    assert [b.accuracy for b in bins] == pytest.approx([0.5, 1.0, 2 / 3])
    assert [b.lower for b in bins] == pytest.approx([0, 1 / 3, 2 / 3])
    assert [b.upper for b in bins] == pytest.approx([1 / 3, 2 / 3, 1])


def test_ece_bin_edges_go_to_the_lower_bin():
    bins = reliability_diagram([1 / 3, 2 / 3, 0.0, 0.3, 0.7], [1, 1, 1, 1, 1], 3)
    assert [b.count for b in bins] == [3, 1, 1]
    bins = reliability_diagram([0.1, 0.2, 0.3, 0.7], [1, 0, 1, 1], 10)
    assert [b.count for b in bins] == [1, 1, 1, 0, 0, 0, 1, 0, 0, 0]
    assert math.isnan(bins[3].confidence) and math.isnan(bins[3].accuracy)


def test_confidence_and_correct_from_probabilities():
    conf, correct = confidence_and_correct([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], [1, 1, 0])
    assert conf.tolist() == pytest.approx([0.8, 0.6, 0.7])
    assert correct.tolist() == [True, False, False]
    # perfectly calibrated in one bin: confidence 0.5, half correct
    assert expected_calibration_error([0.5] * 4, [1, 0, 1, 0], 10) == pytest.approx(0.0)


# predicted-class confidences of 4 samples (tie: sample 2's rgb equals rgb+depth)
MONOTONE = {
    "rgb+depth": [0.9, 0.6, 0.7, 0.5],
    "rgb": [0.8, 0.7, 0.7, 0.75],  # rises: sample 1 (+0.1), sample 3 (+0.25)
    "depth": [0.95, 0.5, 0.71, 0.5],  # rises: sample 0 (+0.05), sample 2 (+0.01)
}


def test_monotonicity_violations_by_hand():
    result = monotonicity_violations(MONOTONE, ["rgb", "depth"])
    assert (result.violations, result.pairs) == (4, 8)  # 2 + 2 rises over 2 pairs x 4 samples
    assert result.share == pytest.approx(50.0)
    assert result.per_pair == pytest.approx({"rgb+depth -> rgb": 50.0, "rgb+depth -> depth": 50.0})
    # tolerance 0.02: the +0.01 rise no longer counts -> 3 / 8
    assert monotonicity_violations(MONOTONE, ["rgb", "depth"], 0.02).share == pytest.approx(37.5)


def test_monotonicity_three_modalities_and_probabilities():
    names = THREE.names
    n = 2
    table = {THREE.mask_name(m): torch.full((n,), 0.5) for m in THREE.combinations}
    table["ir"] = torch.tensor([[0.3, 0.7], [0.6, 0.4]])  # (n, k): max = 0.7, 0.6
    result = monotonicity_violations(table, names)
    # pairs per sample: rgb+depth+ir -> 3 two-modality ones, each two-modality -> 2 singles
    assert result.pairs == 9 * n
    # only depth+ir -> ir and rgb+ir -> ir rise (0.5 -> 0.7 and 0.6), for both samples
    assert result.violations == 4
    only = monotonicity_violations(table, names, combination="ir+rgb")
    assert (only.violations, only.pairs) == (2, 2 * n)
    del table["ir"]
    with pytest.raises(ValueError, match="'ir' is missing"):
        monotonicity_violations(table, names)


def test_det_and_thresholds_equal_counting_by_hand_on_unsorted_tied_scores():
    import random

    from mmanet.operating_points import det_curve, eer_threshold, threshold_at_apcer

    rng = random.Random(3)
    scores = [rng.choice([0.1, 0.2, 0.3, 0.5, 0.7, 0.9]) for _ in range(40)]  # ties, unsorted
    labels = [rng.randint(0, 1) for _ in scores]
    attacks = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    genuine = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    points = det_curve(scores, labels, 1)
    for t, a, b in points:
        assert a == pytest.approx(100 * sum(s >= t for s in attacks) / len(attacks))
        assert b == pytest.approx(100 * sum(s < t for s in genuine) / len(genuine))
    ok = [t for t, a, _ in points if a <= 5.0]
    assert threshold_at_apcer(scores, labels, 1, 5.0) == min(ok)
    gaps = {t: abs(a - b) for t, a, b in points[:-1]}  # the observed scores
    best = min(gaps.values())
    assert eer_threshold(scores, labels, 1) == min(t for t, g in gaps.items() if g == best)


def test_a_reference_the_corruption_leaves_unchanged_has_no_relative_ce():
    from mmanet.robustness import corruption_errors

    # the reference's errors equal its clean error up to float noise (1e-15 points):
    # its degradation is none, so the relative CE is undefined, not 10^15
    result = corruption_errors({"c": [3.0, 4.0]}, 1.0, {"c": [2.0 + 1e-15, 2.0]}, 2.0)
    assert math.isnan(result.relative_ce["c"])
    assert result.ce["c"] == pytest.approx(100 * 7 / 4)
    both = corruption_errors(
        {"c": [3.0, 4.0], "d": [5.0]}, 1.0, {"c": [2.0, 2.0], "d": [4.0]}, 2.0
    )  # d: 100 · (5 − 1) / (4 − 2) = 200; the relative mCE is over d alone
    assert both.relative_mce == pytest.approx(200.0)

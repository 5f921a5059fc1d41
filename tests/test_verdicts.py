"""Verdicts against the baseline (mmanet.verdicts): each definition against numbers worked
out by hand, the direction of "better" per metric, and the comparison's tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import fast_overrides
from mmanet.experiment import compare, demo_config_path, write_tables
from mmanet.tasks import ClassificationTask, SegmentationTask
from mmanet.verdicts import (
    BETTER,
    NOISE,
    WORSE,
    compare_to_baseline,
    default_baseline,
    paired_interval,
    t_quantile,
    verdict,
    verdict_section,
    verdicts,
    wilcoxon,
)


def results(metric: str, **methods: dict[str, list[float]]) -> dict:
    """method -> combination -> metric -> {"values": one per seed} (as report.aggregate)."""
    return {
        method: {name: {metric: {"values": values}} for name, values in combos.items()}
        for method, combos in methods.items()
    }


# Three seeds of one combination. Paired by seed, the differences are
# 10.0 − 11.0 = −1.0, 10.1 − 10.9 = −0.8, 10.2 − 11.4 = −1.2: mean −1.0,
# sd = sqrt((0² + 0.2² + 0.2²) / 2) = 0.2, half-width t_{0.975,2} · 0.2 / √3
# = 4.302653 · 0.2 / 1.7320508 = 0.4968276, interval [−1.4968276, −0.5031724].
# (Sorted values would pair 10.0 with 10.9 and 10.1 with 11.0: differences −0.9, −0.9,
# −1.2, sd 0.1732 — another interval.)
METHOD, BASELINE = [10.0, 10.1, 10.2], [11.0, 10.9, 11.4]
LOW, HIGH = -1.4968276, -0.5031724


def test_the_t_quantile_has_n_minus_1_degrees_of_freedom():
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-6)
    assert t_quantile(0.975, 1) == pytest.approx(12.706205, abs=1e-6)
    two_seeds = paired_interval([-1.0, -0.5], lower_is_better=True)
    # mean −0.75, sd = 0.5/√2 = 0.3535534, half = 12.706205 · 0.3535534 / √2 = 3.1765512
    assert (two_seeds.low, two_seeds.high) == pytest.approx((-3.9265512, 2.4265512))
    assert two_seeds.verdict == NOISE  # two seeds: an honest, wide interval


def test_the_interval_of_three_seeds_paired_by_seed_against_a_hand_computation():
    table = results("error", m={"a": METHOD}, sf_md={"a": BASELINE})
    rows = compare_to_baseline(table, "m", "sf_md", "error", lower_is_better=True)["rows"]
    labels = ["a", "Single-modality average", "Average (1 combinations)"]
    assert [row["row"] for row in rows] == labels
    row = rows[0]
    assert row["differences"] == pytest.approx([-1.0, -0.8, -1.2])
    assert row["mean"] == pytest.approx(-1.0)
    assert (row["low"], row["high"]) == pytest.approx((LOW, HIGH), abs=1e-6)
    assert row["verdict"] == BETTER


def test_a_group_row_pairs_the_seeds_group_means():
    # Seed means of the single views a, b: method (1+3)/2 = 2, (2+2)/2 = 2, (4+2)/2 = 3;
    # baseline (2+4)/2 = 3, (3+4)/2 = 3.5, (5+3)/2 = 4 → differences −1, −1.5, −1.
    table = results(
        "error",
        m={"a": [1.0, 2.0, 4.0], "b": [3.0, 2.0, 2.0], "a+b": [2.0, 2.0, 3.0]},
        sf_md={"a": [2.0, 3.0, 5.0], "b": [4.0, 4.0, 3.0], "a+b": [3.0, 2.0, 1.0]},
    )
    rows = {
        r["row"]: r
        for r in compare_to_baseline(table, "m", "sf_md", "error", lower_is_better=True)["rows"]
    }
    assert rows["Single-modality average"]["differences"] == pytest.approx([-1.0, -1.5, -1.0])
    # all three: method 6/3, 6/3, 9/3; baseline 9/3, 9/3, 9/3 → −1, −1, 0
    assert rows["Average (3 combinations)"]["differences"] == pytest.approx([-1.0, -1.0, 0.0])
    assert rows["a+b"]["differences"] == pytest.approx([-1.0, 0.0, 2.0])


def test_an_error_drop_is_better_and_an_miou_drop_is_worse():
    assert verdict(-2.0, -0.5, lower_is_better=True) == BETTER
    assert verdict(-2.0, -0.5, lower_is_better=False) == WORSE
    assert verdict(0.5, 2.0, lower_is_better=True) == WORSE
    assert verdict(0.5, 2.0, lower_is_better=False) == BETTER
    error = results("error", m={"a": METHOD}, sf_md={"a": BASELINE})
    miou = results("miou", m={"a": METHOD}, sf_md={"a": BASELINE})
    # the direction is the task's: classification's error "min", segmentation's mIoU "max"
    lower = {
        "error": ClassificationTask.lower_is_better("error"),
        "miou": SegmentationTask.lower_is_better("miou"),
    }
    by_error = compare_to_baseline(error, "m", "sf_md", "error", lower_is_better=lower["error"])
    by_miou = compare_to_baseline(miou, "m", "sf_md", "miou", lower_is_better=lower["miou"])
    assert by_error["rows"][0]["verdict"] == BETTER
    assert by_miou["rows"][0]["verdict"] == WORSE


def test_an_interval_that_crosses_or_touches_0_is_within_noise():
    assert verdict(-0.5, 0.3, lower_is_better=True) == NOISE
    assert verdict(-0.5, 0.3, lower_is_better=False) == NOISE
    assert verdict(0.0, 0.4, lower_is_better=True) == NOISE
    # −1.0, −0.5, −1.5: sd 0.5, half 4.302653 · 0.5 / √3 = 1.2420689 → [−2.24, +0.24]
    interval = paired_interval([-1.0, -0.5, -1.5], lower_is_better=True)
    assert (interval.low, interval.high) == pytest.approx((-2.2420689, 0.2420689))
    assert interval.verdict == NOISE
    assert verdict(math.nan, math.nan, lower_is_better=True) == "n/a"


def test_wilcoxon_with_ties_and_zeros_against_a_hand_computation():
    # Drop the two zeros: 1, −1, 2, 2, 3, −4 (n = 6). Ranks of |d|: the tied 1s share
    # (1+2)/2 = 1.5, the tied 2s (3+4)/2 = 3.5, then 5 and 6. W+ = 1.5 + 3.5 + 3.5 + 5
    # = 13.5, W− = 1.5 + 6 = 7.5 (sum 21 = 6·7/2). Ties: the normal approximation,
    # mean 6·7/4 = 10.5, σ² = 6·7·13/24 − [(2³−2) + (2³−2)]/48 = 22.75 − 0.25 = 22.5,
    # z = 3/√22.5 = 0.6324555, p = 2Φ(−z) = erfc(z/√2) = 0.5270893.
    test = wilcoxon([0.0, 1.0, -1.0, 2.0, 2.0, 3.0, -4.0, 0.0], lower_is_better=True)
    assert (test.n, test.zeros, test.method) == (6, 2, "normal")
    assert (test.w_plus, test.w_minus, test.statistic) == (13.5, 7.5, 7.5)
    assert test.p_value == pytest.approx(0.5270893, abs=1e-6)
    assert test.verdict == NOISE


def test_wilcoxon_ties_are_not_split_by_float_noise():
    # 0.1 + 0.2 = 0.30000000000000004 ties with 0.3: ranks 1.5, 1.5, 3, W+ = 4.5, W− = 1.5
    # (unrounded, 0.3 would rank 1 and 0.1 + 0.2 rank 2: W+ = 5, and an exact p-value).
    test = wilcoxon([0.1 + 0.2, -0.3, 0.6], lower_is_better=True)
    assert (test.w_plus, test.w_minus, test.method) == (4.5, 1.5, "normal")


def test_wilcoxon_exact_without_ties_against_a_hand_computation():
    # 1, −2, 3, 4: W+ = 1 + 3 + 4 = 8, W− = 2. Of the 2^4 = 16 sign patterns, W+ ≤ 2 for
    # {}, {1}, {2} and (by symmetry) W+ ≥ 8 for three more: p = 6/16 = 0.375.
    test = wilcoxon([1.0, -2.0, 3.0, 4.0], lower_is_better=True)
    assert (test.method, test.w_plus, test.w_minus, test.p_value) == ("exact", 8.0, 2.0, 0.375)
    # Six negative differences: only the all-negative and all-positive patterns are as
    # extreme, p = 2/64 = 0.03125 < 0.05: better for the error, worse for the mIoU.
    six = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]
    assert wilcoxon(six, lower_is_better=True).p_value == pytest.approx(0.03125)
    assert wilcoxon(six, lower_is_better=True).verdict == BETTER
    assert wilcoxon(six, lower_is_better=False).verdict == WORSE
    assert wilcoxon([0.0, 0.0], lower_is_better=True).verdict == NOISE  # nothing to rank


def test_the_baseline_is_sf_md_when_run_else_the_first_method():
    assert default_baseline(["hemis", "sf_md", "mmanet"]) == "sf_md"
    assert default_baseline(["hemis", "mmanet"]) == "hemis"
    table = results("error", m={"a": METHOD}, sf_md={"a": BASELINE})
    assert verdicts(table, "error", lower_is_better=True)["baseline"] == "sf_md"
    assert list(verdicts(table, "error", baseline="m", lower_is_better=True)["methods"]) == [
        "sf_md"
    ]
    with pytest.raises(ValueError, match="not among"):
        verdicts(table, "error", baseline="mmanet", lower_is_better=True)


def summary_of(table: dict, seeds: list[int], baseline: str | None = None) -> dict:
    """What compare writes, without the training."""
    return {
        "metric": "error",
        "lower_is_better": True,
        "split": "test",
        "seeds": seeds,
        "titles": {"m": "M", "sf_md": "SF-MD"},
        "methods": table,
        "verdicts": verdicts(table, "error", baseline, lower_is_better=True),
    }


def test_the_comparison_tables_carry_the_verdicts(tmp_path):
    table = results("error", sf_md={"a": BASELINE}, m={"a": METHOD})
    text = write_tables(summary_of(table, [0, 1, 2]), tmp_path / "results.md")
    assert "## Verdicts against SF-MD" in text
    assert "| M vs SF-MD |" in text
    assert "| a | -1.00 [-1.50, -0.50] better |" in text
    assert "| Wilcoxon, seeds × combinations | p = 0.25 (n 3) within noise |" in text

    one_seed = results("error", sf_md={"a": [11.0]}, m={"a": [10.0]})
    text = write_tables(summary_of(one_seed, [0]), tmp_path / "one.md")
    assert "verdicts need >= 2 seeds (1 run)." in text
    assert "M vs SF-MD" not in text


@pytest.mark.slow
def test_compare_with_two_seeds_judges_each_method_against_sf_md(tmp_path, capsys):
    from mmanet.cli import main
    from mmanet.config import parse_overrides

    out = tmp_path / "cmp"
    short = [a for a in fast_overrides(out) if not a.startswith("out=")]
    short += ["data.modalities=[fou,kar,mor]", "optim.epochs=2", "optim.milestones=[1]"]
    args = ["compare", "--methods", "hemis,sf_md", "--seeds", "2", "--out", str(out)]
    assert main([*args, "--no-figures", "--no-progress", *short]) == 0
    printed = capsys.readouterr().out
    assert "HeMIS vs SF-MD" in printed and "Wilcoxon, seeds × combinations" in printed
    summary = json.loads((out / "results.json").read_text())
    judged = summary["verdicts"]
    assert judged["baseline"] == "sf_md" and list(judged["methods"]) == ["hemis"]
    rows = judged["methods"]["hemis"]["rows"]
    assert [r["row"] for r in rows][-2:] == ["Single-modality average", "Average (7 combinations)"]
    hemis, sf_md = summary["methods"]["hemis"], summary["methods"]["sf_md"]
    seed_differences = [a - b for a, b in zip(
        hemis["fou"]["error"]["values"], sf_md["fou"]["error"]["values"], strict=True
    )]  # fmt: skip
    assert rows[0]["row"] == "fou" and rows[0]["differences"] == pytest.approx(seed_differences)
    assert all(r["verdict"] in (BETTER, WORSE, NOISE) for r in rows)
    assert "## Verdicts against SF-MD" in (out / "results.md").read_text()

    # Another baseline, and one seed: the runs are reused; the verdicts need two seeds.
    summary = compare(
        ["hemis", "sf_md"], [0], out, demo_config_path(), parse_overrides(short),
        progress=False, baseline="hemis",
    )  # fmt: skip
    assert summary["verdicts"]["baseline"] == "hemis" and not summary["verdicts"]["methods"]
    assert "verdicts need >= 2 seeds" in verdict_section(summary["verdicts"])


def test_the_readme_quotes_the_verdicts_computed_from_the_demo_results():
    """README "What the tables show": every interval it quotes is the one computed from
    docs/results/classification/results.json (three seeds), with its verdict."""
    root = Path(__file__).parents[1]
    summary = json.loads((root / "docs/results/classification/results.json").read_text())
    readme = " ".join((root / "README.md").read_text().split())  # one line: no wrapping
    quoted = {  # (method, baseline): the rows the README quotes
        ("mmanet", "sf_md"): ["1 modality (mean of 6)", "2 modalities (mean of 15)",
                              "Average (63 combinations)"],
        ("sf_md_sp", "sf_md"): ["Average (63 combinations)"],
        ("sf_mad", "sf_md"): ["Average (63 combinations)"],
        ("sf_mad", "sf_md_sp"): ["Average (63 combinations)"],
        ("mmanet", "sf_mad"): ["Average (63 combinations)", "3 modalities (mean of 20)"],
        ("mmanet", "sf_mad_sr"): ["Average (63 combinations)", "1 modality (mean of 6)"],
        ("sf_mad_sr", "sf_mad"): ["1 modality (mean of 6)"],
    }  # fmt: skip
    for (method, baseline), labels in quoted.items():
        rows = compare_to_baseline(
            summary["methods"], method, baseline, "error", lower_is_better=True
        )["rows"]
        for row in (r for r in rows if r["row"] in labels):
            interval = f"{row['mean']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}]"
            assert interval in readme, (method, baseline, row["row"], interval)
            after = readme.split(interval, 1)[1][:80]
            if row["verdict"] != NOISE:
                assert after.lstrip().startswith(f"*{row['verdict']}*"), (method, interval)
    for method, baseline in [("mmanet", "sf_md"), ("sf_mad", "sf_md_sp"), ("mmanet", "sf_mad")]:
        test = compare_to_baseline(
            summary["methods"], method, baseline, "error", lower_is_better=True
        )["wilcoxon"]
        assert f"p = {test['p_value']:.2g})" in readme, (method, baseline, test["p_value"])

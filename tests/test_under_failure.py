"""``mmanet evaluate --failure-rates``: the expected metrics when each sensor fails
independently, from the run's own per-combination table, computed here by hand."""

from __future__ import annotations

import json

import pytest

from mmanet.cli import main
from mmanet.experiment import demo_config_path
from mmanet.testing import TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("failure") / "run"
    overrides = [o for o in TINY if not o.startswith("data.modalities")]
    args = ["train", "--config", str(demo_config_path()), *overrides]
    assert main([*args, "data.modalities=[fou,kar]", "optim.epochs=2", f"out={out}"]) == 0
    return out


def test_the_expected_metric_is_the_failure_weighted_table(run, capsys):
    assert main(["evaluate", "--run", str(run), "--failure-rates", "fou=0.1,kar=0.3"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(next((run / "evaluations").glob("test-*.json")).read_text())
    table = {name: row["error"] for name, row in report["combinations"].items()}
    # P(fou only) = 0.9 * 0.3, P(kar only) = 0.1 * 0.7, P(both) = 0.9 * 0.7, P(none) = 0.03
    by_hand = (0.27 * table["fou"] + 0.07 * table["kar"] + 0.63 * table["fou+kar"]) / 0.97
    under = report["under_failure"]
    assert under["failure_rates"] == {"fou": 0.1, "kar": 0.3}
    assert under["no_decision"] == pytest.approx(0.03)
    assert under["expected"]["error"] == pytest.approx(by_hand, rel=1e-12)
    assert f"error {by_hand:.2f}" in printed and "3.00 % of the time" in printed


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        ("fou=0.1", "--failure-rates: modality 'kar' has no failure rate"),
        ("fou=0.1,kar=1.5", "--failure-rates: modality 'kar': failure rate 1.5 is outside [0, 1]"),
        ("fou=0.1,rgb=0.2", "--failure-rates: failure rate given for unknown modality 'rgb'"),
        ("fou:0.1", "--failure-rates: 'fou:0.1' is not modality=probability"),
    ],
)
def test_bad_failure_rates_are_one_line(run, capsys, rates, message):
    assert main(["evaluate", "--run", str(run), "--failure-rates", rates]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mmanet: error: {message}") and "\n" not in err


def test_the_failure_curve_of_a_comparison_is_the_weighting_of_each_seeds_table():
    from mmanet.figures import failure_curves

    def row(*values):
        return {"miou": {"values": list(values)}}

    summary = {
        "metric": "miou",
        "methods": {
            "m": {"rgb": row(10.0, 20.0), "depth": row(30.0, 40.0), "rgb+depth": row(50.0, 60.0)}
        },
    }
    curves = failure_curves(summary, ["rgb", "depth"], grid=(0.0, 0.5))
    # p = 0: the full combination; p = 0.5: each of the three non-empty combinations 1/4,
    # renormalised by 1 - 1/4: the plain mean of the three
    assert curves["m"][0] == [50.0, pytest.approx((10 + 30 + 50) / 3)]
    assert curves["m"][1] == [60.0, pytest.approx((20 + 40 + 60) / 3)]

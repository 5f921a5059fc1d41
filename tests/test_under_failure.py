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


def test_a_comparisons_under_failure_table_weights_each_seed_by_hand():
    from mmanet.report import failure_table
    from mmanet.robustness import comparison_under_failure

    def row(*values):
        return {"error": {"values": list(values)}}

    methods = {
        "a": {"rgb": row(10.0, 20.0), "depth": row(30.0, 40.0), "rgb+depth": row(2.0, 4.0)},
        "b": {"rgb": row(12.0, 12.0), "depth": row(12.0, 12.0), "rgb+depth": row(12.0, 12.0)},
    }
    under = comparison_under_failure(
        methods, ["rgb", "depth"], "error", {"rgb": 0.5, "depth": 0.0}, shared=(0.5,)
    )
    shared, given = under["rows"]
    # p = 0.5 for both: each non-empty combination 1/4, renormalised by 3/4
    assert shared["methods"]["a"]["values"] == [
        pytest.approx((10 + 30 + 2) / 3),
        pytest.approx((20 + 40 + 4) / 3),
    ]
    assert shared["no_decision"] == pytest.approx(0.25)
    # rgb fails half the time, depth never: rgb+depth 1/2, depth alone 1/2
    assert given["methods"]["a"]["values"] == [pytest.approx(16.0), pytest.approx(22.0)]
    assert given["methods"]["a"]["mean"] == pytest.approx(19.0)
    assert given["methods"]["a"]["std"] == pytest.approx(4.242640687)  # stdev of 16, 22
    assert given["no_decision"] == 0.0 and given["label"] == "rgb=0.5, depth=0"
    table = failure_table(under, {"a": "A", "b": "B"}, lower_is_better=True)
    lines = table.splitlines()
    assert lines[0] == "| Each sensor fails with | A | B | No decision |"
    # seeds: 42 / 3 = 14 and 64 / 3 = 21.33; mean 17.67, stdev 5.19
    assert lines[2] == "| p=0.5 | 17.67 ± 5.19 | **12.00 ± 0.00** | 25.00 |"
    assert lines[3] == "| rgb=0.5, depth=0 | 19.00 ± 4.24 | **12.00 ± 0.00** | 0.00 |"


def test_bad_failure_rates_of_a_comparison_are_one_line(capsys):
    assert main(["compare", "--methods", "sf_md", "--failure-rates", "fou=2", "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmanet: error: --failure-rates:") and "\n" not in err.strip()


def test_a_comparison_tabulates_the_tasks_secondary_metrics_each_in_its_direction(tmp_path):
    from mmanet.experiment import write_tables

    def cell(*values):
        return {"values": list(values)}

    combos = {"a": (2.0, 4.0, 30.0), "b": (6.0, 8.0, None)}  # error, ece, rises
    methods = {
        m: {
            name: {
                "error": cell(e + shift),
                "ece": cell(c + shift),
                **({"rises": cell(r + shift)} if r is not None else {}),  # b has none
            }
            for name, (e, c, r) in combos.items()
        }
        for m, shift in (("x", 0.0), ("y", 1.0))
    }
    summary = {
        "metric": "error",
        "lower_is_better": True,
        "secondary_metrics": {"ece": "min", "rises": "max", "absent": "min"},
        "split": "test",
        "seeds": [0],
        "titles": {"x": "X", "y": "Y"},
        "methods": methods,
    }
    text = write_tables(summary, tmp_path / "results.md")
    ece = text.split("## ece (%, lower is better)\n\n")[1].split("\n\n")[0].splitlines()
    assert ece[2] == "| a | **4.00** | 5.00 |"
    rises = text.split("## rises (%, higher is better)\n\n")[1].split("\n\n")[0].splitlines()
    assert rises[2] == "| a | 30.00 | **31.00** |"
    assert rises[3] == "| b | n/a | n/a |"  # not defined there: not a number in the table
    assert rises[-1] == "| Average (2 combinations) | 30.00 | **31.00** |"  # over a only
    assert "## absent" not in text  # a number the runs did not report

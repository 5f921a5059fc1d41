"""``mmanet compare --corrupt``: every run evaluated under the corruptions, ImageNet-C's CE
against the baseline paired by seed (by hand), and the same numbers as ``mmanet evaluate
--corrupt`` on each run."""

from __future__ import annotations

import json

import pytest

from mmanet.cli import main
from mmanet.corruption_compare import ce_table, error_table, summarize_corruptions
from mmanet.testing import TINY


def section(clean: float, errors: dict[str, list[float]]) -> dict:
    """A run's corruption section, as far as the summary reads it."""
    return {
        "metric": "error",
        "error_form": "value",
        "specs": ["noise"],
        "seed": 0,
        "clean_error": clean,
        "summary": {
            label: {"errors": {str(s + 1): e for s, e in enumerate(values)}}
            for label, values in errors.items()
        },
    }


def test_ce_is_paired_by_seed_against_the_reference_by_hand():
    sections = {
        "ref": [section(2.0, {"noise": [4.0, 6.0]}), section(4.0, {"noise": [8.0, 12.0]})],
        "m": [section(0.0, {"noise": [3.0, 2.0]}), section(2.0, {"noise": [5.0, 5.0]})],
    }
    summary = summarize_corruptions(sections, "ref")
    m = summary["methods"]["m"]
    # seed 0: 100 · (3 + 2) / (4 + 6) = 50; seed 1: 100 · 10 / 20 = 50
    assert m["ce"]["noise"]["values"] == [pytest.approx(50.0), pytest.approx(50.0)]
    # relative: seed 0: 100 · ((3 − 0) + (2 − 0)) / ((4 − 2) + (6 − 2)) = 83.33;
    # seed 1: 100 · ((5 − 2) + (5 − 2)) / ((8 − 4) + (12 − 4)) = 50
    assert m["relative_ce"]["noise"]["values"] == [pytest.approx(500 / 6), pytest.approx(50.0)]
    assert summary["methods"]["ref"]["mce"]["values"] == [100.0, 100.0]
    assert m["errors"]["noise"]["2"]["values"] == [2.0, 5.0]
    assert m["clean_error"]["mean"] == pytest.approx(1.0)
    table = ce_table(summary, {"ref": "Ref", "m": "M"}).splitlines()
    assert table[0] == "| Corruption | Ref | M |"
    assert table[2] == "| noise | 100.00 ± 0.00 | **50.00 ± 0.00** |"
    # paired by seed against the reference's 100: 50 − 100 both times, no spread
    assert table[-2] == "| mCE − 100 vs Ref | — | -50.00 [-50.00, -50.00] better |"
    # relative: −16.67 and −50 with two seeds: t_{0.975,1} = 12.71 widens it across 0
    relative = m["verdicts"]["relative_mce"]
    assert relative["mean"] == pytest.approx(-100 / 3) and relative["verdict"] == "within noise"
    rows = error_table(summary, {}).splitlines()
    assert rows[2] == "| clean | 0 | 3.00 ± 1.41 | **1.00 ± 1.41** |"
    assert rows[4] == "| noise | 2 | 9.00 ± 4.24 | **3.50 ± 2.12** |"


def test_ce_pairs_seeds_rather_than_pooling_them():
    sections = {
        "ref": [section(0.0, {"noise": [10.0]}), section(0.0, {"noise": [30.0]})],
        "m": [section(0.0, {"noise": [20.0]}), section(0.0, {"noise": [30.0]})],
    }
    ce = summarize_corruptions(sections, "ref")["methods"]["m"]["ce"]["noise"]
    assert ce["values"] == [pytest.approx(200.0), pytest.approx(100.0)]  # pooled: 125


@pytest.mark.slow
def test_compare_corrupt_equals_evaluate_corrupt_on_each_run(tmp_path, capsys):
    out = tmp_path / "cmp"
    common = [*TINY, "data.modalities=[fou,kar]"]
    args = ["compare", "--methods", "sf_md,mmanet", "--seeds", "1", "--out", str(out)]
    assert main([*args, "--corrupt", "noise:2", "--no-progress", *common]) == 0
    summary = json.loads((out / "results.json").read_text())
    corrupted = summary["corruptions"]
    assert corrupted["reference"] == "sf_md" and corrupted["labels"] == ["noise"]
    assert (out / "corruptions.png").is_file()
    assert "## Under corruptions" in (out / "results.md").read_text()
    assert "corruption error (CE, %) against SF-MD" in capsys.readouterr().out
    for method in ("sf_md", "mmanet"):
        run = out / "seed-0" / method
        assert main(["evaluate", "--run", str(run), "--corrupt", "noise:2", "--no-figures"]) == 0
        found = sorted((run / "evaluations").glob("test-*.json"))
        report = json.loads(found[0].read_text())["corruptions"]
        errors = corrupted["methods"][method]["errors"]["noise"]["2"]["values"]
        assert errors == [report["summary"]["noise"]["errors"]["2"]]
        assert corrupted["methods"][method]["clean_error"]["values"] == [report["clean_error"]]
    # the reference's CE is 100; the other method's is its error over the reference's
    ref_error = corrupted["methods"]["sf_md"]["errors"]["noise"]["2"]["values"][0]
    own_error = corrupted["methods"]["mmanet"]["errors"]["noise"]["2"]["values"][0]
    ce = corrupted["methods"]["mmanet"]["ce"]["noise"]["values"][0]
    assert ce == pytest.approx(100 * own_error / ref_error)


def test_a_bad_corruption_spec_of_a_comparison_is_one_line_before_training(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "sf_md", "--seeds", "1", "--out", str(out)]
    assert main([*args, "--corrupt", "noise:9", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmanet: error:") and "noise:9" in err and "\n" not in err.strip()
    assert not (out / "seed-0").exists()


@pytest.mark.slow
def test_a_runs_kept_section_is_reused_only_for_its_checkpoint(tmp_path):
    from mmanet.config import build_config
    from mmanet.corruption_compare import run_section
    from mmanet.data import build_data

    run = tmp_path / "run"
    common = [*TINY, "data.modalities=[fou,kar]"]
    assert main(["train", *common, f"out={run}"]) == 0
    data = build_data(build_config(run / "config.yaml").data)
    first = run_section(run, data, ["holes:1"], "test")
    (kept,) = (run / "evaluations").glob("corruptions-*.json")
    record = json.loads(kept.read_text())
    kept.write_text(json.dumps({**record, "clean_error": 123.0}))
    assert run_section(run, data, ["holes:1"], "test")["clean_error"] == 123.0  # reused
    kept.write_text(json.dumps({**record, "clean_error": 123.0, "checkpoint": "elsewhere"}))
    again = run_section(run, data, ["holes:1"], "test")
    assert again["clean_error"] == first["clean_error"]  # another checkpoint's: computed anew

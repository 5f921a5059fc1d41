"""End to end through the CLI on fixture data in the CASIA-SURF and CeFA layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmanet.cli import main
from mmanet.data.fixtures import write_casia_surf, write_cefa

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHORT = [
    "device=cpu",
    "progress=false",
    "tensorboard=false",
    "data.num_workers=0",
    "data.batch_size=8",
    "data.eval_batch_size=32",
    "optim.epochs=2",
    "optim.warmup_epochs=1",
    "optim.milestones=[1]",
    "method.mar.warmup_epochs=1",
]


def run_teacher_and_mmanet(dataset: str, root: Path, out: Path, extra: list[str]) -> dict:
    small = [f"data.{dataset}.image_size=32", f"data.{dataset}.resize=40"]
    common = [f"data.root={root}", *SHORT, *small, *extra]
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIGS / dataset / "teacher.yaml"),
                f"out={out / 'teacher'}",
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIGS / dataset / "mmanet.yaml"),
                f"out={out / 'mmanet'}",
                f"method.teacher={out / 'teacher'}",
                *common,
            ]
        )
        == 0
    )
    return json.loads((out / "mmanet" / "results_test.json").read_text())


@pytest.mark.slow
def test_casia_surf_fixture_teacher_and_mmanet_through_the_cli(tmp_path, capsys):
    root = write_casia_surf(tmp_path / "surf", n_per_split=12, size=40)
    report = run_teacher_and_mmanet("casia_surf", root, tmp_path / "runs", [])
    assert list(report["combinations"]) == [
        "rgb",
        "depth",
        "ir",
        "rgb+depth",
        "rgb+ir",
        "depth+ir",
        "rgb+depth+ir",
    ]
    for metrics in report["combinations"].values():
        assert metrics["acer"] == pytest.approx((metrics["apcer"] + metrics["bpcer"]) / 2)
        assert metrics["threshold"] == metrics["threshold_eer"]  # the default: val EER
    assert len(report["omega"]) in (1, 3)  # MAR ran its warm-up and fixed Ω
    printed = capsys.readouterr().out
    assert "ACER" in printed and "APCER" in printed and "BPCER" in printed
    assert "Average (7 combinations)" in printed

    # The Table 2 layout again from the saved run, at the validation-EER thresholds.
    assert main(["evaluate", "--run", str(tmp_path / "runs" / "mmanet"), "threshold=val_eer"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "at the validation EER threshold of each combination" in table[0]
    columns = ["Combination", "ACER", "APCER", "BPCER", "HTER", "BPCER@APCER=5%", "BPCER@APCER=1%"]
    assert table[1].split()[:7] == columns
    assert [row.split()[0] for row in table[3:10]] == list(report["combinations"])


@pytest.mark.slow
def test_cefa_fixture_teacher_and_mmanet_through_the_cli(tmp_path):
    root = write_cefa(tmp_path / "cefa", subjects_per_split=1, frames_per_video=2, size=32)
    report = run_teacher_and_mmanet("cefa", root, tmp_path / "runs", ["data.cefa.protocol=4@5"])
    assert len(report["combinations"]) == 7
    assert {"acer", "apcer", "bpcer"} <= set(report["combinations"]["rgb+depth+ir"])

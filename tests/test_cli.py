"""The command line: demo, train, evaluate, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mmanet
from conftest import evaluation, fast_overrides
from mmanet.cli import main


@pytest.mark.slow
def test_demo_trains_every_ablation_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "demo"
    overrides = [o for o in fast_overrides(out) if not o.startswith("out=")]
    assert main(["demo", "--out", str(out), "--no-progress", *overrides]) == 0
    printed = capsys.readouterr().out
    for title in ("SF-MD", "SF-MD+SP", "SF-MD+MAD", "SF-MAD+SR", "MMANet"):
        assert title in printed
    assert "Average (63 combinations)" in printed
    assert "1 modality (mean of 6)" in printed
    summary = json.loads((out / "results.json").read_text())
    assert list(summary["methods"]) == ["sf_md", "sf_md_sp", "sf_mad", "sf_mad_sr", "mmanet"]
    assert len(summary["methods"]["mmanet"]) == 63
    assert set(summary["methods"]["mmanet"]["fou"]) == {"accuracy", "error", "n", "ece"}
    markdown = (out / "results.md").read_text()
    assert "## Every combination" in markdown and "| fou+fac |" in markdown

    # A second call reuses the finished runs instead of training again.
    stamp = (out / "seed-0" / "mmanet" / "results_test.json").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--no-progress", *overrides]) == 0
    assert (out / "seed-0" / "mmanet" / "results_test.json").stat().st_mtime_ns == stamp


def test_demo_runs_as_many_jobs_as_the_cpus_hold(monkeypatch):
    from mmanet.cli import default_jobs

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert default_jobs(1, [0, 1, 2], ["sf_md", "mmanet"]) == 6  # one per run at most
    assert default_jobs(1, [0], ["sf_md", "mmanet"]) == 2
    assert default_jobs(2, [0, 1, 2], ["sf_md", "mmanet"]) == 4  # 8 cores / 2 threads
    assert default_jobs(16, [0, 1, 2], ["sf_md", "mmanet"]) == 1
    assert default_jobs(0, [0, 1, 2], ["sf_md", "mmanet"]) == 1  # torch's default: all cores


def test_train_resume_and_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    args = fast_overrides(run, **{"method.name": "sf_md", "optim.epochs": 2})
    assert main(["train", *args]) == 0
    assert "Average (63 combinations)" in capsys.readouterr().out
    assert main(["train", "--resume", *args]) == 0  # already complete: nothing to redo
    assert main(["evaluate", "--run", str(run), "--split", "val"]) == 0
    report = evaluation(run, "val")
    assert report["split"] == "val" and len(report["combinations"]) == 63


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "optim.epochs=two"], "config key 'optim.epochs' must be int"),
        (["train", "optim.epoch=2"], "unknown config key 'optim.epoch'"),
        (["train", "data.modalities=[fou,rgb]"], "unknown Multiple Features view 'rgb'"),
        (["train", "method.alpha=-1"], "method.alpha must be >= 0"),
        (["train", "method.name=mmnet"], "unknown method.name='mmnet'"),
        (["train", "model.encoders.rgb.type=cnn"], "model.encoders names unknown modality 'rgb'"),
        (["train", "method.mask_probabilities=[1, 2]"], "method.mask_probabilities: mask"),
        (["train", "optim.epochs=3", "optim.warmup_epochs=5"], "optim.warmup_epochs (5)"),
        (["train", "--config", "nope.yaml"], "config file not found: nope.yaml"),
        (["evaluate", "--run", "nowhere"], "config file not found: nowhere/config.yaml"),
        (["train", "imports=[no_such_module]"], "imports: no module named 'no_such_module'"),
        (["train", "imports=[missing.py]"], "imports: file not found: missing.py"),
        (["train", "method.distill=kd"], "unknown method.distill='kd'; registered: mad, sp"),
        (["train", "method.terms={nope: 1}"], "unknown method.terms='nope'; registered: dmrnet_kl"),
        (["train", "task=regression"], "unknown task='regression'; registered: classification"),
        (
            ["train", "model.fusion=hemis", "model.fusion_aux=true"],
            "model.fusion_aux: model.fusion=hemis has no auxiliary heads",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmanet: error: ") and message in err
    assert err.count("\n") == 1


def test_an_imported_module_that_fails_is_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('not today')\n")
    assert main(["train", f"imports=[{broken}]"]) == 2
    err = capsys.readouterr().err
    assert err == f"mmanet: error: imports: {broken} failed: RuntimeError: not today\n"


def test_console_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "mmanet", "train", "model.fusion=mean"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "mmanet: error: unknown model.fusion='mean'; "
        "registered: concat, hemis, lcr, mmformer, rfnet, shaspec"
    )


def test_train_on_a_manifest_of_images_and_arrays(tmp_path):
    import numpy as np
    from PIL import Image

    rows = ["rgb,depth,label"]
    rng = np.random.default_rng(0)
    for i in range(40):
        label = i % 2
        image = rng.integers(0, 60, (8, 8, 3), dtype=np.uint8) + 150 * label
        Image.fromarray(image.astype(np.uint8)).save(tmp_path / f"{i}.png")
        np.save(tmp_path / f"{i}.npy", rng.normal(label, 0.5, size=5).astype(np.float32))
        rows.append(f"{i}.png,{i}.npy,{'live' if label else 'spoof'}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    common = [
        "data.name=manifest",
        f"data.manifest.file={tmp_path / 'data.csv'}",
        "data.batch_size=8",
        "data.bona_fide_class=0",
        "model.encoders.rgb.type=cnn",
        "model.encoders.rgb.widths=[4,8]",
        "model.encoder.widths=[8]",
        "model.head_widths=[8]",
        "optim.lr=0.01",
    ]
    teacher = fast_overrides(tmp_path / "teacher", **{"method.name": "teacher"})
    assert main(["train", *common, *teacher]) == 0
    student = fast_overrides(
        tmp_path / "mmanet", **{"method.name": "mmanet", "method.teacher": tmp_path / "teacher"}
    )
    assert main(["train", *common, *student]) == 0
    report = json.loads((tmp_path / "mmanet" / "results_test.json").read_text())
    assert list(report["combinations"]) == ["rgb", "depth", "rgb+depth"]
    assert {"apcer", "bpcer", "acer"} <= set(report["combinations"]["rgb"])


def test_train_customized_without_a_combination_trains_one_model_each(tmp_path, capsys):
    out = tmp_path / "customized"
    args = fast_overrides(
        out, **{"method.name": "customized", "data.modalities": "[fou,mor]", "optim.epochs": 2}
    )
    assert main(["train", *args]) == 0
    printed = capsys.readouterr().out
    assert "Average (3 combinations)" in printed
    report = json.loads((out / "results_test.json").read_text())
    assert list(report["combinations"]) == ["fou", "mor", "fou+mor"]
    for name in report["combinations"]:
        assert (out / "seed-0" / "customized" / name / "results_test.json").is_file()


@pytest.mark.slow
def test_segmentation_demo_on_the_rendered_scenes(tmp_path, capsys):
    out = tmp_path / "seg"
    args = [
        "demo",
        "--task",
        "segmentation",
        "--out",
        str(out),
        "--no-progress",
        "--seeds",
        "1",
        f"data.rendered.cache_dir={tmp_path / 'cache'}",
        "data.rendered.size=[32,64]",
        "optim.epochs=2",
        "method.mar.warmup_epochs=1",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "miou (%)" in printed and "ESANet-MD" in printed and "MMANet" in printed
    summary = json.loads((out / "results.json").read_text())
    assert summary["metric"] == "miou"
    assert list(summary["methods"]["mmanet"]) == ["rgb", "depth", "rgb+depth"]


def test_nyuv2_paper_configs_end_to_end_on_the_fixture(tmp_path, capsys):
    """The shipped configs/nyuv2 (ESANet, median-frequency weights, Nesterov SGD with
    OneCycle per epoch) train the teacher and MMANet on a fixture in NYUv2's prepared
    layout, shrunk only by overrides (ResNet-18 for the configs' ResNet-50, and no ImageNet
    file)."""
    from mmanet.data.seg_fixtures import write_nyuv2

    # 64 wide: the bottleneck map is 1 x 2, so batch norm has 2 values even when a batch
    # holds a single sample of a weak combination (the regularization head's batch)
    root = write_nyuv2(tmp_path / "nyuv2", n_train=8, n_test=3, size=(24, 64))
    tiny = [
        f"data.root={root}",
        "data.nyuv2.size=[24,64]",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "data.num_workers=0",
        "device=cpu",
        "progress=false",
        "tensorboard=false",
        "model.esanet.encoder=resnet18",
        "model.pretrained=null",
        "model.esanet.width=8",
        "model.esanet.decoder_channels=[16,8,8]",
        "model.esanet.context_bins=[1,2]",
        "optim.epochs=2",
        "method.mar.warmup_epochs=1",
    ]
    teacher, student = tmp_path / "teacher", tmp_path / "mmanet"
    base = ["train", "--config"]
    assert main([*base, "configs/nyuv2/teacher.yaml", f"out={teacher}", *tiny]) == 0
    args = [*base, "configs/nyuv2/mmanet.yaml", f"out={student}", f"method.teacher={teacher}"]
    assert main([*args, *tiny]) == 0
    assert "Average (3 combinations)" in capsys.readouterr().out
    assert main(["evaluate", "--run", str(student)]) == 0
    report = evaluation(student)
    assert list(report["combinations"]) == ["rgb", "depth", "rgb+depth"]
    for metrics in report["combinations"].values():
        assert 0.0 <= metrics["miou"] <= 100.0 and len(metrics["per_class_iou"]) == 40
    assert (student / "predictions" / "sample-0.png").is_file()
    log = [json.loads(line) for line in (student / "log.jsonl").read_text().splitlines()]
    assert any("loss_distill" in row for row in log) and any("loss_reg" in row for row in log)
    png = tmp_path / "prediction.png"
    rgb = next((root / "test" / "rgb").iterdir())
    assert (
        main(["predict", "--checkpoint", str(student), "--rgb", str(rgb), "--out", str(png)]) == 0
    )
    assert "modalities used: rgb; missing: depth" in capsys.readouterr().out
    from PIL import Image

    assert Image.open(png).size == (64, 24)


@pytest.mark.slow
def test_compare_writes_tables_figures_and_provenance_and_reuses_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "all", "--seeds", "2", "--out", str(out), "--no-progress"]
    short = [a for a in fast_overrides(out) if not a.startswith("out=")]
    short += ["data.modalities=[fou,kar,zer]", "optim.epochs=3"]
    assert main([*args, *short]) == 0
    printed = capsys.readouterr().out
    assert "HeMIS" in printed and "mmFormer" in printed and "Customized" in printed
    summary = json.loads((out / "results.json").read_text())
    assert list(summary["methods"]) == [
        "customized", "sf_md", "hemis", "lcr", "rfnet", "mmformer", "mmanet",
        "sf_md_sp", "sf_mad", "sf_mad_sr", "dmrnet", "shaspec",
    ]  # fmt: skip
    rfnet = summary["columns"]["rfnet"]
    assert rfnet["config"]["model"]["fusion"] == "rfnet" and len(rfnet["runs"]) == 2
    assert rfnet["code_versions"][0].startswith(mmanet.__version__)
    table = (out / "results.md").read_text()
    titles = ("Comparison with the unified methods", "MAD vs SP", "MAR vs SR", "came after")
    for title in (*titles, "Provenance"):
        assert title in table
    assert " ± " in table and "**" in table
    for figure in ("bars.png", "failure_curve.png", "fig4_sp_vs_mad.png", "fig5_warmup.png"):
        assert (out / figure).stat().st_size > 1000, figure
    stamp = (out / "seed-1" / "hemis" / "results_test.json").stat().st_mtime_ns
    assert main([*args, *short, "--no-figures"]) == 0  # everything is reused
    assert (out / "seed-1" / "hemis" / "results_test.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_compare_in_parallel_processes_equals_the_sequential_comparison(tmp_path):
    short = [a for a in fast_overrides(tmp_path) if not a.startswith("out=")]
    short += ["data.modalities=[fou,kar]", "optim.epochs=2", "threads=1"]
    results = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        args = ["compare", "--methods", "customized,hemis,sf_mad", "--out", str(out)]
        assert main([*args, "--jobs", str(jobs), "--no-figures", "--no-progress", *short]) == 0
        results[jobs] = json.loads((out / "results.json").read_text())["methods"]
    assert results[1] == results[2]


def test_parsing_the_command_line_imports_neither_torch_nor_the_models():
    """``mmanet --help`` and the parser of every command: the commands import what they
    need when they run (benchmarks/bench_startup.py: 0.025x the cost of the library)."""
    code = (
        "import sys\n"
        "from mmanet.cli import build_parser\n"
        "parser = build_parser()\n"
        "for argv in (['--help'], ['train', '--help'], ['predict', '--help']):\n"
        "    try:\n"
        "        parser.parse_args(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('mmanet.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "['mmanet.cli', 'mmanet.errors']"

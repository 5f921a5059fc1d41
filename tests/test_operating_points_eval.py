"""Anti-spoofing operating points in evaluation, the table, the DET figure, and the
per-combination thresholds that the ONNX sidecar and ``mmanet predict`` share
(docs/evaluation.md#anti-spoofing-operating-points)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest
import torch
from torch.utils.data import Subset

from mmanet import operating_points as op
from mmanet.cli import main
from mmanet.config import build_config
from mmanet.data import build_data, input_reader
from mmanet.data.fixtures import write_casia_surf, write_cefa
from mmanet.deployment_thresholds import THRESHOLDS_FILE
from mmanet.engine import load_network
from mmanet.engine.evaluate import combination_scores
from mmanet.engine.loader import make_loader
from mmanet.predict import predict_files
from mmanet.spoofing_report import (
    candidate_counts,
    det_points,
    fast_eer_threshold,
    fast_threshold_at_apcer,
)
from mmanet.tasks.anti_spoofing import AntiSpoofingTask, dataset_attack_types

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHORT = [
    "device=cpu",
    "progress=false",
    "tensorboard=false",
    "data.num_workers=0",
    "data.batch_size=8",
    "data.eval_batch_size=32",
    "optim.epochs=2",
    "optim.warmup_epochs=0",
    "optim.milestones=[]",
]
COMBINATIONS = ["rgb", "depth", "ir", "rgb+depth", "rgb+ir", "depth+ir", "rgb+depth+ir"]
BONA_FIDE = 1


def train_teacher(dataset: str, root: Path, out: Path, extra: list[str] = ()) -> Path:
    small = [f"data.{dataset}.image_size=32", f"data.{dataset}.resize=40"]
    config = str(CONFIGS / dataset / "teacher.yaml")
    args = ["train", "--config", config, f"out={out}", f"data.root={root}", *SHORT, *small]
    assert main([*args, *extra]) == 0
    return out


@pytest.fixture(scope="module")
def surf_run(tmp_path_factory) -> Path:
    """A two-epoch teacher on the tiny CASIA-SURF fixture (default threshold: val_eer)."""
    base = tmp_path_factory.mktemp("surf")
    root = write_casia_surf(base / "data", n_per_split=12, size=40)
    return train_teacher("casia_surf", root, base / "teacher")


def evaluate(run: Path, capsys, *overrides: str) -> tuple[dict, list[str], Path]:
    """``mmanet evaluate``: the report, the printed lines, the JSON's path."""
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), *overrides]) == 0
    lines = capsys.readouterr().out.splitlines()
    path = Path(lines[-1].rsplit("results: ", 1)[1])
    return json.loads(path.read_text()), lines, path


def run_scores(run: Path, split: str):
    """The scores of ``split`` as the engine computes them: (c, n, k), (n,), (c, n)."""
    config = build_config(run / "config.yaml")
    data = build_data(config.data)
    model, _ = load_network(run)
    masks = list(model.modalities.combinations)
    loader = make_loader(data.split(split), config.data.eval_batch_size, 0)
    return combination_scores(model, loader, masks), data


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)


@pytest.mark.slow
def test_per_combination_numbers_equal_the_operating_point_functions(surf_run, capsys):
    report, lines, path = evaluate(surf_run, capsys)
    (val, val_y, val_has), _ = run_scores(surf_run, "val")
    (test, test_y, test_has), _ = run_scores(surf_run, "test")
    assert list(report["combinations"]) == COMBINATIONS
    for i, name in enumerate(COMBINATIONS):
        got = report["combinations"][name]
        v, vy = val[i, val_has[i], BONA_FIDE], val_y[val_has[i]]
        t, ty = test[i, test_has[i], BONA_FIDE], test_y[test_has[i]]
        eer = op.eer_threshold(v, vy, BONA_FIDE)
        assert got["threshold_eer"] == eer and got["threshold"] == eer  # the default: val EER
        assert close(got["apcer"], op.apcer(t, ty, BONA_FIDE, eer))
        assert close(got["bpcer"], op.bpcer(t, ty, BONA_FIDE, eer))
        assert close(got["acer"], (got["apcer"] + got["bpcer"]) / 2)
        assert close(got["hter"], op.hter(t, ty, BONA_FIDE, eer))
        for key, target in (("apcer_5", 5.0), ("apcer_1", 1.0)):
            threshold = op.threshold_at_apcer(v, vy, BONA_FIDE, target)
            assert got[f"threshold_{key}"] == threshold
            point = op.bpcer_at_apcer(v, vy, t, ty, BONA_FIDE, target)
            assert close(got[f"bpcer_at_{key}"], point.bpcer)
            assert close(got[f"apcer_at_{key}"], point.apcer)
        assert got["one_class"] == op.one_class_decision(t, eer)
        assert "worst_attack" not in got  # CASIA-SURF's lists name no attack type
        # the DET points: det_curve's (fewer than 500 here: all of them)
        expected = [list(point) for point in op.det_curve(t, ty, BONA_FIDE)]
        np.testing.assert_allclose(report["det"][name]["points"], expected, rtol=0, atol=1e-12)
    # the global threshold: every combination's validation scores pooled
    pooled = torch.cat([val[i, val_has[i], BONA_FIDE] for i in range(7)])
    pooled_y = torch.cat([val_y[val_has[i]] for i in range(7)])
    section = report["operating_points"]
    assert section["threshold"] == "val_eer" and section["attack_types"] is None
    assert section["global"]["threshold_eer"] == op.eer_threshold(pooled, pooled_y, BONA_FIDE)
    assert section["global"]["threshold_apcer_1"] == op.threshold_at_apcer(
        pooled, pooled_y, BONA_FIDE, 1.0
    )
    rgb = section["global"]["combinations"]["rgb"]
    t0, ty0 = test[0, test_has[0], BONA_FIDE], test_y[test_has[0]]
    assert close(rgb["hter"], op.hter(t0, ty0, BONA_FIDE, section["global"]["threshold_eer"]))
    # the printed table states its threshold and has the operating-point columns
    assert lines[0].startswith("ACER/APCER/BPCER at the validation EER threshold of each")
    assert lines[1].split()[:7] == [
        "Combination",
        "ACER",
        "APCER",
        "BPCER",
        "HTER",
        "BPCER@APCER=5%",
        "BPCER@APCER=1%",
    ]
    # the DET figure next to the evaluation JSON
    figure = path.with_name(path.stem + "-det.png")
    assert figure.is_file() and figure.stat().st_size > 1000
    assert any(line.startswith("DET curves: ") for line in lines)


@pytest.mark.slow
def test_a_fixed_threshold_is_stated_and_no_figures_writes_none(surf_run, capsys):
    report, lines, path = evaluate(surf_run, capsys, "--no-figures", "threshold=0.5")
    assert lines[0].startswith("ACER/APCER/BPCER at the fixed threshold 0.5;")
    assert all(m["threshold"] == 0.5 for m in report["combinations"].values())
    assert not path.with_name(path.stem + "-det.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("threshold", "flag"), [("1.5", "all attack"), ("0", "all bona fide")])
def test_a_one_class_model_is_flagged_not_scored(surf_run, capsys, threshold, flag):
    """A threshold above (below) every score calls every sample an attack (bona fide): the
    table flags each combination and puts its ACER in parentheses."""
    report, lines, _ = evaluate(surf_run, capsys, "--no-figures", f"threshold={threshold}")
    one_class = "attack" if flag == "all attack" else "bona_fide"
    assert all(m["one_class"] == one_class for m in report["combinations"].values())
    assert lines[1].split()[-1] == "FLAG"
    rows = {line.split()[0]: line for line in lines[3:10]}
    assert list(rows) == COMBINATIONS
    for row in rows.values():
        assert row.endswith(flag) and row.split()[1].startswith("(")
    assert "7 one-class" in lines[11]
    assert any("one-class combination" in line for line in lines)


def test_no_flag_column_when_no_combination_is_one_class(capsys):
    from mmanet.spoofing_report import operating_points_table

    values = {
        "acer": 1.0,
        "apcer": 1.0,
        "bpcer": 1.0,
        "hter": 1.0,
        "bpcer_at_apcer_5": 2.0,
        "bpcer_at_apcer_1": 3.0,
        "n": 4,
        "one_class": None,
    }
    report = {
        "combinations": {"rgb": values, "ir": values},
        "average": values,
        "single_average": values,
        "operating_points": {"threshold": "val_eer"},
    }
    table = operating_points_table(report).splitlines()
    assert "FLAG" not in table[1] and "(" not in table[3]


@pytest.fixture(scope="module")
def cefa_run(tmp_path_factory) -> Path:
    """A teacher on the tiny CeFA fixture, protocol 1@1 (test: cloth and screen attacks)."""
    base = tmp_path_factory.mktemp("cefa")
    root = write_cefa(base / "data", subjects_per_split=1, frames_per_video=2, size=32)
    return train_teacher("cefa", root, base / "teacher", ["data.cefa.protocol=1@1"])


@pytest.mark.slow
def test_worst_attack_type_on_cefa(cefa_run, capsys):
    report, _, _ = evaluate(cefa_run, capsys, "--no-figures")
    (test, test_y, test_has), data = run_scores(cefa_run, "test")
    types = data.test.attack_types
    assert set(types) == {None, "cloth", "screen"}
    assert report["operating_points"]["attack_types"] == list(
        dict.fromkeys(t for t in types if t is not None)
    )
    for i, name in enumerate(COMBINATIONS):
        got = report["combinations"][name]
        t, ty = test[i, test_has[i], BONA_FIDE], test_y[test_has[i]]
        worst, rate = op.worst_attack_apcer(t, ty, BONA_FIDE, got["threshold"], types)
        assert got["worst_attack"] == worst and close(got["worst_attack_apcer"], rate)
        per_type = op.attack_type_apcer(t, ty, BONA_FIDE, got["threshold"], types)
        assert got["attack_apcer"] == pytest.approx(per_type)
        assert got["worst_attack_apcer"] >= got["apcer"] - 1e-9  # the worst type's APCER
    assert isinstance(report["average"]["worst_attack_apcer"], float)


def test_attack_types_follow_subsets():
    dataset = SimpleNamespace(attack_types=["a", "b", "c", "d", "e"])
    assert dataset_attack_types(Subset(Subset(dataset, [4, 2, 0]), [2, 0])) == ["a", "e"]
    assert dataset_attack_types(Subset(SimpleNamespace(), [0])) is None


class FakePasses:
    """Scores given per loader: ``{loader: (scores, labels, eligible)}``."""

    def __init__(self, table, names=()) -> None:
        self.table, self.names = table, names

    def scores(self, loader, masks):
        return self.table[id(loader)]


def test_validation_without_attacks_gives_nan_and_a_note_not_a_crash():
    """The validation samples of a combination lack attacks: its thresholds are NaN, the
    metrics at them NaN, a note says why; the other combination is scored as usual."""
    masks = [(1, 0), (0, 1)]
    val_loader = SimpleNamespace(dataset=SimpleNamespace())
    test_loader = SimpleNamespace(dataset=SimpleNamespace())
    probabilities = torch.tensor([0.2, 0.4, 0.6, 0.8])
    scores = torch.stack([1 - probabilities, probabilities], dim=1)[None].repeat(2, 1, 1)
    val_eligible = torch.tensor([[True, True, True, True], [False, False, True, True]])
    labels = torch.tensor([0, 0, 1, 1])
    table = {
        id(val_loader): (scores, labels, val_eligible),
        id(test_loader): (scores, labels, torch.ones(2, 4, dtype=torch.bool)),
    }
    task = AntiSpoofingTask(["attack", "bona fide"], BONA_FIDE)
    result = task.evaluate(FakePasses(table, ("a", "b")), test_loader, masks, val_loader)
    first, second = result.per_mask
    assert first["threshold"] == pytest.approx(0.6) and first["acer"] == 0.0
    assert math.isnan(second["threshold"]) and math.isnan(second["acer"])
    assert math.isnan(second["threshold_apcer_5"]) and math.isnan(second["hter"])
    assert second["one_class"] is None and "no attack" in " ".join(second["notes"])
    assert set(result.sections["det"]) == {"a", "b"}


def test_fast_counts_equal_the_definitions():
    """The sorted counts behind the DET points and the pooled thresholds give exactly the
    numbers of mmanet.operating_points (ties included)."""
    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        n = int(torch.randint(2, 40, (1,), generator=gen))
        scores = torch.randint(0, 8, (n,), generator=gen).double() / 8  # many ties
        labels = torch.randint(0, 2, (n,), generator=gen)
        bona_fide = trial % 2
        curve = op.det_curve(scores, labels, bona_fide)
        candidates, accepted, rejected, attacks, genuine = candidate_counts(
            scores, labels, bona_fide
        )
        assert [c[0] for c in curve] == candidates.tolist()
        for (_, a, b), acc, rej in zip(curve, accepted.tolist(), rejected.tolist(), strict=True):
            assert close(a, 100 * acc / attacks if attacks else math.nan)
            assert close(b, 100 * rej / genuine if genuine else math.nan)
        if attacks and genuine:
            assert fast_eer_threshold(scores, labels, bona_fide) == op.eer_threshold(
                scores, labels, bona_fide
            )
        if attacks:
            for target in (0.0, 1.0, 5.0, 30.0):
                assert fast_threshold_at_apcer(
                    scores, labels, bona_fide, target
                ) == op.threshold_at_apcer(scores, labels, bona_fide, target)
    many = torch.rand(5000, generator=gen)
    assert len(det_points(many, torch.randint(0, 2, (5000,), generator=gen), 1, 100)) == 100


def _sample_files(root: Path, split: str = "Testing") -> list[dict[str, Path]]:
    """Two bona fide and two attack samples of the CASIA-SURF fixture: {modality: file}."""
    folders = {"rgb": "color", "depth": "depth", "ir": "ir"}
    samples = []
    for part, clips in (("real_part", "real.rssdk"), ("fake_part", "04_en_b.rssdk")):
        for clip_dir in sorted((root / split / part).iterdir())[:2]:
            clip = clip_dir / clips
            samples.append(
                {m: next(iter(sorted((clip / f).iterdir()))) for m, f in folders.items()}
            )
    return samples


@pytest.mark.slow
def test_onnx_with_sidecar_thresholds_decides_as_predict_for_every_combination(
    surf_run, tmp_path, capsys
):
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(surf_run), "--out", str(out)]) == 0
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    thresholds = sidecar["thresholds"]
    assert thresholds["default"] == "val_eer" and thresholds["bona_fide_class"] == BONA_FIDE
    assert list(thresholds["combinations"]) == COMBINATIONS
    # the sidecar's numbers are the evaluation's per-combination validation thresholds
    report, _, _ = evaluate(surf_run, capsys, "--no-figures")
    for name in COMBINATIONS:
        got = report["combinations"][name]
        assert thresholds["combinations"][name]["val_eer"] == got["threshold_eer"]
        assert thresholds["combinations"][name]["apcer_5"] == got["threshold_apcer_5"]

    config = build_config(surf_run / "config.yaml")
    reader = input_reader(config.data)
    model, _ = load_network(surf_run)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    order = sidecar["mask"]["order"]
    samples = _sample_files(Path(config.data.root))

    def onnx_decision(files: dict[str, Path], name: str, point: str) -> str:
        """onnxruntime with the mask of combination ``name``, the sidecar's threshold."""
        present = name.split("+")
        feed = {
            m: (
                reader.read(files[m], m, model.input_shapes[m])[None].numpy()
                if m in present
                else np.zeros((1, *model.input_shapes[m]), dtype=np.float32)
            )
            for m in order
        }
        feed["mask"] = np.array([[float(m in present) for m in order]], dtype=np.float32)
        (logits,) = session.run(["logits"], feed)
        score = torch.from_numpy(logits[0]).softmax(0)[BONA_FIDE].item()
        return "bona fide" if score >= thresholds["combinations"][name][point] else "attack"

    # predict on files, one sample given as each of the 7 combinations (the default point)
    for name in COMBINATIONS:
        files = {m: samples[0][m] for m in name.split("+")}
        result, _ = predict_files(surf_run, files)
        assert result["combination"] == name and result["operating_point"] == "val_eer"
        assert result["threshold"] == thresholds["combinations"][name]["val_eer"]
        assert result["decision"] == onnx_decision(samples[0], name, "val_eer")
    # predict --manifest: every sample as every combination, at two operating points
    manifest = tmp_path / "rows.csv"
    rows = [(files, name) for files in samples for name in COMBINATIONS]
    manifest.write_text(
        "rgb,depth,ir\n"
        + "".join(
            ",".join(str(f[m]) if m in name.split("+") else "" for m in order) + "\n"
            for f, name in rows
        )
    )
    seen = set()
    for point in ("val_eer", "apcer_5"):
        table = tmp_path / f"{point}.csv"
        args = ["--manifest", str(manifest), "--out", str(table), "--operating-point", point]
        assert main(["predict", "--checkpoint", str(surf_run), *args]) == 0
        lines = table.read_text().splitlines()
        assert lines[0] == "row,modalities,attack,bona fide,threshold,decision"
        for line, (files, name) in zip(lines[1:], rows, strict=True):
            cells = line.split(",")
            assert cells[1] == name
            assert float(cells[4]) == thresholds["combinations"][name][point]
            assert cells[5] == onnx_decision(files, name, point), (line, point)
            seen.add(cells[5])
    assert len(rows) == 4 * 7 and seen == {"bona fide", "attack"}  # both decisions occur


@pytest.mark.slow
def test_thresholds_that_cannot_be_computed_are_a_named_error(surf_run, tmp_path, capsys):
    """Without the validation split (data moved away, no kept thresholds): export and
    predict stop with one line naming --no-thresholds; with it, the sidecar says so."""
    config = build_config(surf_run / "config.yaml")
    root = Path(config.data.root)
    moved = root.with_name(root.name + "-away")
    for kept in surf_run.glob(f"checkpoints/*/{THRESHOLDS_FILE}"):
        kept.unlink()
    shutil.move(root, moved)
    try:
        out = tmp_path / "model.onnx"
        capsys.readouterr()
        assert main(["export", "--checkpoint", str(surf_run), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--no-thresholds" in err and "validation split" in err
        assert not out.exists()
        assert (
            main(["export", "--checkpoint", str(surf_run), "--out", str(out), "--no-thresholds"])
            == 0
        )
        sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
        assert sidecar["thresholds"] is None and "--no-thresholds" in sidecar["thresholds_note"]
        rgb = moved / "Testing/real_part/CLKJ_AS0000/real.rssdk/color/1.jpg"
        args = ["predict", "--checkpoint", str(surf_run), "--rgb", str(rgb)]
        assert main(args) == 2
        assert "--no-thresholds" in capsys.readouterr().err
        assert main([*args, "--no-thresholds"]) == 0
        assert "decision: none (no thresholds (--no-thresholds))" in capsys.readouterr().out
    finally:
        shutil.move(moved, root)


def test_evaluate_matches_the_definitions_on_many_scores():
    """Engine-free: 2 combinations (one with half its test samples), 400 samples, three
    attack types; every number as mmanet.operating_points gives it."""
    gen = torch.Generator().manual_seed(1)
    masks = [(1, 0), (1, 1)]
    n = 400

    def split():
        labels = torch.randint(0, 2, (n,), generator=gen)
        bona_fide = torch.rand(2, n, generator=gen) * 0.6 + 0.4 * labels  # (c, n)
        scores = torch.stack([1 - bona_fide, bona_fide], dim=2)
        eligible = torch.ones(2, n, dtype=torch.bool)
        eligible[1, ::2] = False
        return scores, labels, eligible

    val, test = split(), split()
    kinds = ["print", "replay", "mask"]
    types = [None if y == BONA_FIDE else kinds[i % 3] for i, y in enumerate(test[1].tolist())]
    val_loader = SimpleNamespace(dataset=SimpleNamespace())
    test_loader = SimpleNamespace(dataset=SimpleNamespace(attack_types=types))
    passes = FakePasses({id(val_loader): val, id(test_loader): test}, ("x", "x+y"))
    task = AntiSpoofingTask(["attack", "bona fide"], BONA_FIDE)
    result = task.evaluate(passes, test_loader, masks, val_loader)
    for i, got in enumerate(result.per_mask):
        v, vy = val[0][i, val[2][i], 1], val[1][val[2][i]]
        keep = test[2][i]
        t, ty = test[0][i, keep, 1], test[1][keep]
        kept_types = [types[j] for j in keep.nonzero()[:, 0].tolist()]
        eer = op.eer_threshold(v, vy, BONA_FIDE)
        assert got["threshold"] == eer and got["n"] == int(keep.sum())
        assert close(got["acer"], op.hter(t, ty, BONA_FIDE, eer))
        assert close(got["hter"], op.hter(t, ty, BONA_FIDE, eer))
        for key, target in (("apcer_5", 5.0), ("apcer_1", 1.0)):
            point = op.bpcer_at_apcer(v, vy, t, ty, BONA_FIDE, target)
            assert got[f"threshold_{key}"] == op.threshold_at_apcer(v, vy, BONA_FIDE, target)
            assert close(got[f"bpcer_at_{key}"], point.bpcer)
            assert close(got[f"apcer_at_{key}"], point.apcer)
        worst, rate = op.worst_attack_apcer(t, ty, BONA_FIDE, eer, kept_types)
        assert got["worst_attack"] == worst and close(got["worst_attack_apcer"], rate)
        marked = result.sections["det"][["x", "x+y"][i]]["marked"]
        assert marked["apcer_1"] == [got["apcer_at_apcer_1"], got["bpcer_at_apcer_1"]]
    first = result.per_mask[0]
    assert first["threshold_apcer_5"] != first["threshold_apcer_1"]  # the targets differ here
    pooled = torch.cat([val[0][i, val[2][i], 1] for i in range(2)])
    pooled_y = torch.cat([val[1][val[2][i]] for i in range(2)])
    glob = result.sections["operating_points"]["global"]
    assert glob["threshold_eer"] == op.eer_threshold(pooled, pooled_y, BONA_FIDE)
    assert glob["threshold_apcer_5"] == op.threshold_at_apcer(pooled, pooled_y, BONA_FIDE, 5.0)
    t1, ty1 = test[0][1, test[2][1], 1], test[1][test[2][1]]
    assert close(glob["combinations"]["x+y"]["bpcer"], op.bpcer(t1, ty1, 1, glob["threshold_eer"]))
    assert result.sections["operating_points"]["attack_types"] == list(
        dict.fromkeys(t for t in types if t is not None)
    )


def _gather_types(rank: int, world: int, init: str, out: str) -> None:
    """One process of :func:`test_attack_types_are_gathered_in_the_order_of_the_scores`."""
    import torch.distributed as dist

    from mmanet.tasks.anti_spoofing import _loader_attack_types

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        types = [None if i % 3 == 0 else f"t{i}" for i in range(7)]  # sample i: "t<i>"
        dataset = SimpleNamespace(attack_types=types)
        shard = Subset(dataset, range(rank, 7, world))  # as engine.distributed.shard
        # the scores' labels: every shard's, concatenated in rank order (all_gather_cat)
        order = [i for r in range(world) for i in range(r, 7, world)]
        labels = torch.tensor([BONA_FIDE if types[i] is None else 0 for i in order])
        got = _loader_attack_types(SimpleNamespace(dataset=shard), labels, BONA_FIDE)
        Path(out, f"{rank}.json").write_text(json.dumps([got, [types[i] for i in order]]))
    finally:
        dist.destroy_process_group()


def test_attack_types_are_gathered_in_the_order_of_the_scores(tmp_path):
    """Under data parallelism (two gloo processes) each process's shard of attack types is
    gathered in rank order, as the scores are."""
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'store'}"
    mp.spawn(_gather_types, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got, expected = json.loads((tmp_path / f"{rank}.json").read_text())
        assert got == expected


def test_a_comparisons_det_figure_has_a_panel_per_combination(tmp_path):
    from mmanet.spoofing_report import det_points, write_det_comparison

    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.9, 0.2])
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    curve = {"points": det_points(scores, labels, 1), "marked": {"val_eer": [33.3, 0.0]}}
    reports = {m: {"det": {"rgb": curve, "rgb+depth": curve}} for m in ("sf_md", "mmanet")}
    path = write_det_comparison(reports, {"sf_md": "SF-MD"}, tmp_path / "det.png")
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    assert width > height  # two panels side by side

"""ONNX export of the deployment network: one file for every combination, checked with
onnxruntime against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

from conftest import fast_overrides
from mmanet.cli import main
from mmanet.config import build_config
from mmanet.data import ArrayReader
from mmanet.engine import Trainer, load_network


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, mfeat):
    """A short MMANet run of the classification demo (with its regularization head)."""
    root = tmp_path_factory.mktemp("export")
    teacher = root / "teacher"
    short = {"optim.epochs": 3, "method.mar.warmup_epochs": 1}
    config = build_config(
        "configs/mfeat/demo.yaml", fast_overrides(teacher, **short, **{"method.name": "teacher"})
    )
    Trainer(config, mfeat).fit()
    run = root / "mmanet"
    extra = {**short, "method.name": "mmanet", "method.teacher": str(teacher)}
    Trainer(build_config("configs/mfeat/demo.yaml", fast_overrides(run, **extra)), mfeat).fit()
    return run


def test_onnx_export_matches_pytorch_for_all_63_combinations(demo_run, mfeat, tmp_path, capsys):
    out = tmp_path / "demo.onnx"
    assert main(["export", "--checkpoint", str(demo_run), "--out", str(out)]) == 0
    assert "63 combinations checked" in capsys.readouterr().out
    sidecar = json.loads((tmp_path / "demo.onnx.json").read_text())
    assert len(sidecar["max_abs_difference"]) == 63
    assert max(sidecar["max_abs_difference"].values()) <= 1e-4
    assert sidecar["mask"]["order"] == mfeat.modalities
    default = ArrayReader()  # mfeat is a function-only dataset: features as given
    for name, shape in mfeat.input_shapes.items():
        assert sidecar["inputs"][name] == {
            "shape": ["batch", *shape],
            "dtype": "float32",
            "preprocessing": default.describe(name),
        }
    assert sidecar["inputs"]["mask"]["shape"] == ["batch", len(mfeat.modalities)]

    # independently: real test samples, every combination, one session
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [*mfeat.modalities, "mask"]
    model, _ = load_network(demo_run)
    assert not any(k.startswith("reg_head.") for k in model.state_dict())
    views = {name: mfeat.test.views[name][:5] for name in mfeat.modalities}
    masks = torch.tensor(model.modalities.combinations, dtype=torch.float32)
    with torch.no_grad():
        expected = model.predict_masks(model.encode(views), masks)  # (63, 5, 10)
    for mask, reference in zip(masks, expected, strict=True):
        feed = {name: v.numpy() for name, v in views.items()}
        feed["mask"] = mask.expand(5, -1).numpy()
        (logits,) = session.run(["logits"], feed)
        np.testing.assert_allclose(logits, reference.numpy(), atol=1e-4, rtol=0)


def test_export_of_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_predict_from_any_subset_of_modality_files(demo_run, mfeat, tmp_path, capsys):
    paths = {}
    for name in ("fou", "pix"):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], mfeat.test.views[name][0].numpy())
    out = tmp_path / "p.json"
    args = ["predict", "--checkpoint", str(demo_run), "--fou", str(paths["fou"])]
    assert main([*args, "--pix", str(paths["pix"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "modalities used: fou, pix; missing: fac, kar, zer, mor" in printed
    result = json.loads(out.read_text())
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    model, _ = load_network(demo_run)
    with torch.no_grad():
        inputs = {n: mfeat.test.views[n][:1] for n in ("fou", "pix")}
        expected = model(inputs).logits.softmax(1)[0].tolist()
    assert list(result["probabilities"].values()) == pytest.approx(expected, abs=1e-6)

    manifest = tmp_path / "many.csv"
    manifest.write_text(f"fou,pix\n{paths['fou']},{paths['pix']}\n,{paths['pix']}\n")
    table = tmp_path / "many_out.csv"
    many = ["--manifest", str(manifest), "--out", str(table)]
    assert main(["predict", "--checkpoint", str(demo_run), *many]) == 0
    lines = table.read_text().splitlines()
    assert lines[0].startswith("row,modalities,") and lines[2].startswith("1,pix,")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "no modality given; pass at least one of --fou FILE"),
        (["--rgb", "x.npy"], "unknown modality 'rgb'; this network has fou, fac"),
        (["--fou"], "expected --<modality> FILE, got '--fou'"),
        (["--fou", "WRONG"], "fou input of shape (3,), the network needs (76,)"),
        (["--fou", "missing.npy"], "missing.npy: file not found"),
    ],
)
def test_predict_bad_input_is_one_line(demo_run, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "wrong.npy", np.zeros(3, dtype=np.float32))
    extra = ["wrong.npy" if e == "WRONG" else e for e in extra]
    assert main(["predict", "--checkpoint", str(demo_run), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_an_operator_the_exporter_cannot_write_is_one_line(demo_run, tmp_path, capfd, monkeypatch):
    """The exporter's failure (it also prints its whole graph) becomes one line naming the
    network and the operator, exit 1, and no file."""
    import os

    def fails(*args, **kwargs):
        os.write(2, b"Torch IR graph at exception: graph(...)\n")
        raise RuntimeError("Unsupported: ONNX export of operator foo_op. Please report it\nmore")

    monkeypatch.setattr(torch.onnx, "export", fails)
    out = tmp_path / "demo.onnx"
    assert main(["export", "--checkpoint", str(demo_run), "--out", str(out)]) == 1
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and "Torch IR graph" not in err
    assert "model.name=multiview" in err and "foo_op" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []

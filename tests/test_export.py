"""ONNX export of the deployment network: one file for every combination, checked with
onnxruntime against PyTorch."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from conftest import fast_overrides
from mmanet.cli import main
from mmanet.config import build_config
from mmanet.data import ArrayReader
from mmanet.engine import Trainer, load_network
from mmanet.models import MODELS, from_encoders


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


class SpectrumEncoder(nn.Module):
    """(b, n) -> (b, 8): a linear map of the magnitude spectrum. ``torch.fft.rfft`` is an
    operator the TorchScript ONNX exporter cannot write."""

    def __init__(self, length: int) -> None:
        super().__init__()
        self.linear = nn.Linear(length // 2 + 1, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.fft.rfft(x).abs())


class ExportDiffers(nn.Module):
    """(b, n) -> (b, n): the identity, doubled while it is exported (a traced graph that
    disagrees with PyTorch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 if torch.onnx.is_in_onnx_export() else x


def user_run(root: Path, mfeat, name: str, encoder) -> Path:
    """One epoch of the user network ``name`` (registered only meanwhile) with
    ``encoder(length)`` per view."""
    shapes = mfeat.input_shapes
    MODELS.register(name, from_encoders(lambda: {n: encoder(s[0]) for n, s in shapes.items()}))
    run = root / name
    short = {"optim.epochs": 2, "optim.warmup_epochs": 0, "optim.milestones": "[]"}
    extra = {**short, "method.name": "teacher", "model.name": name}
    try:
        config = build_config("configs/mfeat/demo.yaml", fast_overrides(run, **extra))
        Trainer(config, mfeat).fit(stop_after=1)
    except BaseException:
        MODELS.unregister(name)
        raise
    return run


@pytest.fixture
def spectrum_run(tmp_path, mfeat):
    """A registered user network whose encoders use ``torch.fft.rfft``."""
    yield user_run(tmp_path, mfeat, "spectrum", SpectrumEncoder)
    MODELS.unregister("spectrum")


def test_an_operator_the_exporter_cannot_write_is_one_line(spectrum_run, tmp_path, capfd):
    """The exporter's failure (it also prints its whole graph from C++) becomes one line
    naming the network and the operator, exit 1, and no file."""
    out = tmp_path / "out" / "spectrum.onnx"
    capfd.readouterr()
    assert main(["export", "--checkpoint", str(spectrum_run), "--out", str(out)]) == 1
    captured = capfd.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and "Torch IR graph" not in captured.out + err
    assert "the model.name=spectrum network cannot be exported to ONNX with torch" in err
    assert "fft_rfft" in err and "nothing was written" in err
    assert list(out.parent.iterdir()) == []


def test_onnxruntime_disagreeing_with_pytorch_is_one_line(tmp_path, mfeat, capsys):
    """An exported graph whose logits differ from PyTorch's: exit 1, the largest difference
    and its combination named, no file."""
    run = user_run(tmp_path, mfeat, "export_differs", lambda length: ExportDiffers())
    try:
        out = tmp_path / "out" / "differs.onnx"
        capsys.readouterr()
        assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 1
    finally:
        MODELS.unregister("export_differs")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime's logits differ from PyTorch's by" in err
    assert "(tolerance " in err and "nothing was written" in err
    assert list(out.parent.iterdir()) == []


def writable(folder: Path) -> bool:
    """Whether a file can be made in ``folder`` (then removed), whatever its permissions say."""
    probe = folder / "probe"
    try:
        probe.touch()
    except PermissionError:
        return False
    probe.unlink()
    return True


@pytest.mark.parametrize("case", ["read-only folder", "a file in the way"])
def test_an_out_folder_that_cannot_be_written_is_one_line(
    demo_run, tmp_path, capsys, monkeypatch, case
):
    """Found before the export: one line naming the folder and the system's reason, exit 1
    (the system refused a write), nothing written."""
    if case == "read-only folder":
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        message = f"cannot write in the folder {folder} (Permission denied)"
        if writable(folder):  # root ignores permission bits: the refusal, as the system says it
            real_open = Path.open

            def refuse(path, *args, **kwargs):
                if path.parent == folder:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real_open(path, *args, **kwargs)

            monkeypatch.setattr(Path, "open", refuse)
    else:
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        folder = tmp_path / "notes.txt" / "onnx"
        message = f"cannot create the folder {folder} (Not a directory)"
    out = folder / "model.onnx"
    try:
        assert main(["export", "--checkpoint", str(demo_run), "--out", str(out)]) == 1
    finally:
        if folder.is_dir():
            folder.chmod(0o700)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out}: {message}; nothing was written" in err
    assert "cannot be exported" not in err
    assert not folder.exists() or list(folder.iterdir()) == []

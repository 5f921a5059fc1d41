"""Inputs that once passed without a word or with a misleading one (docs/errors.md): one
file given for two modalities, files dropped by ``data.manifest.nonfinite=missing`` (the start-up
summary counts them), malformed files given to ``predict`` (one line, never a traceback) and
an unreadable ``model.pretrained`` (one line, no torch warning). Every refused command exits
with 2, prints one line and leaves what was already written as it was."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmanet.cli import main
from mmanet.config import build_config
from mmanet.data.base import DataBundle, DroppedFile
from mmanet.engine.rundir import summary
from test_inputs import NOTE, fails, make_rows, out, train, trained, untouched, write_manifest

__all__ = ["out", "trained"]  # fixtures shared with test_inputs.py


def same_shape_rows(folder: Path, count: int = 12) -> list[list[str]]:
    """``count`` samples of two (4,) .npy modalities a and b (a file could serve as either)."""
    rows = make_rows(folder, count)
    rng = np.random.default_rng(1)
    for i in range(count):
        np.save(folder / f"b{i}.npy", rng.normal(i % 2, 1.0, 4).astype(np.float32))
    return rows


# --- 1. one file for two modalities -------------------------------------------------------------


def test_one_file_for_two_modalities_in_one_row_is_named(tmp_path, out, capsys):
    rows = same_shape_rows(tmp_path)
    rows[5][1] = "a5.npy"
    manifest = write_manifest(tmp_path, rows)
    assert fails(train(manifest, out), capsys) == (
        f"{manifest}: line 7: modalities 'a' and 'b' name the same file {tmp_path / 'a5.npy'}; "
        "each modality needs its own file"
    )
    untouched(out)


def test_one_file_written_two_ways_is_one_file(tmp_path, out, capsys):
    """Files are compared as files: ``a5.npy`` and ``../<folder>/a5.npy`` are one."""
    rows = same_shape_rows(tmp_path)
    rows[5][1] = f"../{tmp_path.name}/a5.npy"
    manifest = write_manifest(tmp_path, rows)
    assert fails(train(manifest, out), capsys) == (
        f"{manifest}: line 7: modalities 'a' and 'b' name the same file {tmp_path / 'a5.npy'} "
        f"and {tmp_path / '..' / tmp_path.name / 'a5.npy'}; each modality needs its own file"
    )
    untouched(out)


def test_one_file_for_two_modalities_in_every_row_names_the_rows(tmp_path, out, capsys):
    rows = [[a, a, label, split] for a, _, label, split in same_shape_rows(tmp_path)]
    manifest = write_manifest(tmp_path, rows)
    assert fails(train(manifest, out), capsys) == (
        f"{manifest}: line 2: modalities 'a' and 'b' name the same file {tmp_path / 'a0.npy'}; "
        "each modality needs its own file (11 more rows do too: lines 3..13)"
    )
    untouched(out)


def test_predict_refuses_one_file_for_two_modalities(trained, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros(4, dtype=np.float32))
    (tmp_path / "p.json").write_bytes(NOTE)
    args = ["predict", "--checkpoint", trained, "--a", tmp_path / "x.npy"]
    assert fails([*args, "--b", tmp_path / "x.npy", "--out", tmp_path / "p.json"], capsys) == (
        f"predict: modalities 'a' and 'b' name the same file {tmp_path / 'x.npy'}; "
        "each modality needs its own file"
    )
    assert (tmp_path / "p.json").read_bytes() == NOTE


def test_predict_manifest_refuses_one_file_for_two_modalities(trained, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros(4, dtype=np.float32))
    (tmp_path / "m.csv").write_text("a,b\nx.npy,\nx.npy,x.npy\n")
    (tmp_path / "p.csv").write_bytes(NOTE)
    args = ["--manifest", tmp_path / "m.csv", "--out", tmp_path / "p.csv"]
    assert fails(["predict", "--checkpoint", trained, *args], capsys) == (
        f"{tmp_path / 'm.csv'}: line 3: modalities 'a' and 'b' name the same file "
        f"{tmp_path / 'x.npy'}; each modality needs its own file"
    )
    assert (tmp_path / "p.csv").read_bytes() == NOTE


# --- 2. the start-up summary counts what data.manifest.nonfinite=missing drops ----------------


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (
            {5: "a"},  # a training row: 119 of the 120 training samples have a
            [
                "  training samples with each modality: a 119/120 (99.2 %), b 120/120 (100 %); "
                "complete 119/120 (99.2 %)",
                "  data.manifest.nonfinite=missing: 1 file (a 1) holds NaN or infinite values "
                "and is read as a missing modality: {m}: line 7: {d}/a5.npy",
            ],
        ),
        (
            {7: "b", 10: "a", 11: "b"},  # test, val and test rows: every training sample whole
            [
                "  samples: train 120, val 60, test 60",
                "  data.manifest.nonfinite=missing: 3 files (a 1, b 2) hold NaN or infinite "
                "values and are read as missing modalities; the first: {m}: line 9: {d}/b7.npy",
            ],
        ),
    ],
    ids=["one training file", "three outside training"],
)
def test_the_summary_counts_the_files_read_as_missing(tmp_path, capsys, bad, expected):
    rows = make_rows(tmp_path, 240)
    for row, name in bad.items():
        size = 4 if name == "a" else 3
        np.save(tmp_path / f"{name}{row}.npy", np.full(size, np.nan, dtype=np.float32))
    manifest = write_manifest(tmp_path, rows)
    assert main(train(manifest, tmp_path / "run", "data.manifest.nonfinite=missing")) == 0
    printed = capsys.readouterr().out.splitlines()
    for line in expected:
        assert line.format(m=manifest, d=tmp_path) in printed, printed[:4]
    if len(bad) > 1:
        assert not any("training samples with each modality" in line for line in printed)


class Split:
    """A split of ``n`` samples of which ``with_a`` have modality a (b: every one)."""

    def __init__(self, n: int, with_a: int) -> None:
        self.availability = torch.ones(n, 2, dtype=torch.bool)
        self.availability[with_a:, 0] = False

    def __len__(self) -> int:
        return len(self.availability)


@pytest.mark.parametrize(
    ("with_a", "share"),
    [(2399, "2399/2400 (> 99.9 %)"), (1, "1/2400 (< 0.1 %)"), (0, "0/2400 (0 %)")],
)
def test_a_share_is_never_rounded_to_all_or_nothing(with_a, share):
    train = Split(2400, with_a)
    data = DataBundle(train, Split(1, 1), Split(1, 1), ["a", "b"], {}, ["0", "1"])  # type: ignore[arg-type]
    text = summary(build_config(), data, train, "cpu")  # type: ignore[arg-type]
    assert f"each modality: a {share}, b 2400/2400 (100 %); complete {share}" in text


def test_the_summary_lists_no_dropped_file_when_none_is():
    train = Split(4, 3)
    data = DataBundle(train, Split(1, 1), Split(1, 1), ["a", "b"], {}, ["0", "1"])  # type: ignore[arg-type]
    assert "nonfinite" not in summary(build_config(), data, train, "cpu")  # type: ignore[arg-type]
    data.nonfinite_files = [DroppedFile("m.csv: line 3", "b", Path("b1.npy"))]
    assert summary(build_config(), data, train, "cpu").endswith(  # type: ignore[arg-type]
        "data.manifest.nonfinite=missing: 1 file (b 1) holds NaN or infinite values and is read "
        "as a missing modality: m.csv: line 3: b1.npy"
    )


# --- 3. malformed files: one line, in predict as in a manifest ----------------------------------

VALID = np.arange(4, dtype=np.float32)


def write_malformed(path: Path, kind: str) -> None:
    """A file that is not what its name says, as ``kind`` describes it."""
    npy = path.with_suffix(".tmp.npy")
    np.save(npy, VALID)
    whole = npy.read_bytes()
    npy.unlink()
    png = b""
    if kind.endswith("png"):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(npy.with_suffix(".png"))
        png = npy.with_suffix(".png").read_bytes()
        npy.with_suffix(".png").unlink()
    content = {
        "empty npy": b"",
        "truncated npy": whole[:-5],
        "header only npy": whole[:20],
        "pickle npy": pickle.dumps([1.0, 2.0, 3.0, 4.0]),
        "text npy": b"1 2 3 4\n",
        "empty png": b"",
        "text png": b"not a png at all",
        "truncated png": png[:45],
    }
    if kind == "folder npy":
        path.mkdir()
    elif kind == "object npy":
        np.save(path, np.array([1, "x", None, 2.0], dtype=object), allow_pickle=True)
    elif kind == "complex npy":
        np.save(path, VALID.astype(np.complex64))
    else:
        path.write_bytes(content[kind])


MALFORMED = [
    ("empty npy", "cannot read {}: the file is empty (0 bytes)"),
    ("truncated npy", "cannot read {}: Failed to read all data for array."),  # numpy's words
    ("header only npy", "cannot read {}: EOF: reading array header"),
    ("pickle npy", "cannot read {}: not a .npy file (it does not start with the header "
     "np.save writes)"),
    ("text npy", "cannot read {}: not a .npy file (it does not start with the header "
     "np.save writes)"),
    ("object npy", "cannot read {}: dtype object is not a number type (object arrays are "
     "never unpickled)"),
    ("complex npy", "cannot read {}: dtype complex64 holds complex numbers; save real values"),
    ("empty png", "cannot read {}: the file is empty (0 bytes)"),
    ("text png", "cannot read {}: not an image file that can be decoded"),
    ("truncated png", "cannot read {}: image file is truncated"),
    ("folder npy", "{}: a folder, not a file (given for modality 'a')"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "message"), MALFORMED, ids=[kind for kind, _ in MALFORMED])
def test_predict_names_a_malformed_file_in_one_line(trained, tmp_path, capsys, kind, message):
    path = tmp_path / ("x.png" if kind.endswith("png") else "x.npy")
    write_malformed(path, kind)
    (tmp_path / "p.json").write_bytes(NOTE)
    args = ["predict", "--checkpoint", trained, "--a", path, "--out", tmp_path / "p.json"]
    line = fails(args, capsys)
    assert line.startswith(message.format(path)), line
    assert (tmp_path / "p.json").read_bytes() == NOTE


def test_predict_manifest_names_a_malformed_file_and_its_line(trained, tmp_path, capsys):
    np.save(tmp_path / "a.npy", VALID)
    write_malformed(tmp_path / "b.npy", "empty npy")
    (tmp_path / "m.csv").write_text("a,b\na.npy,\na.npy,b.npy\n")
    args = ["--manifest", tmp_path / "m.csv", "--out", tmp_path / "p.csv"]
    assert fails(["predict", "--checkpoint", trained, *args], capsys) == (
        f"{tmp_path / 'm.csv'}: line 3: cannot read {tmp_path / 'b.npy'}: the file is empty "
        "(0 bytes)"
    )
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty npy", "cannot read {}: the file is empty (0 bytes)"),
        ("pickle npy", "cannot read {}: not a .npy file (it does not start with the header "),
        ("complex npy", "cannot read {}: dtype complex64 holds complex numbers; save real values"),
        ("folder npy", "{} is a folder, not a file"),
    ],
    ids=["empty", "pickle", "complex", "folder"],
)
def test_a_manifest_names_a_malformed_file_in_one_line(tmp_path, out, capsys, kind, message):
    rows = make_rows(tmp_path)
    (tmp_path / "a5.npy").unlink()
    write_malformed(tmp_path / "a5.npy", kind)
    manifest = write_manifest(tmp_path, rows)
    line = fails(train(manifest, out), capsys)
    assert line.startswith(f"{manifest}: line 7: " + message.format(tmp_path / "a5.npy")), line
    untouched(out)


# --- 4. an unreadable model.pretrained ----------------------------------------------------------


def image_manifest(folder: Path) -> Path:
    """A manifest of two 16x16 colour image modalities (what the SF network takes)."""
    rows = make_rows(folder)
    for i, row in enumerate(rows):
        for j, name in enumerate("ab"):
            pixels = np.full((16, 16, 3), 10 * i + j, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}{i}.png")
            row[j] = f"{name}{i}.png"
    return write_manifest(folder, rows)


PRETRAINED = {
    "random bytes": (b"\x80\x05" + bytes(range(256)) * 2, "not a state dict saved by torch.save"),
    "text": (b"these are not weights\n", "not a state dict saved by torch.save"),
    "a pickled list": (pickle.dumps([1, 2], protocol=4), "not a state dict saved by torch.save"),
    "empty": (b"", "the file is empty (0 bytes)"),
}


@pytest.mark.parametrize("kind", [*PRETRAINED, "safetensors", "folder"])
def test_an_unreadable_pretrained_file_is_one_clean_line(tmp_path, out, capsys, recwarn, kind):
    manifest = image_manifest(tmp_path / "data")
    weights = tmp_path / ("w.safetensors" if kind == "safetensors" else "w.pth")
    if kind == "folder":
        weights.mkdir()
        reason = "is a folder, not a file"
    elif kind == "safetensors":
        weights.write_bytes(os.urandom(64))
        reason = "cannot read {}: not a safetensors file ("
    else:
        content, why = PRETRAINED[kind]
        weights.write_bytes(content)
        reason = "cannot read {}: " + why
    model = ["model.name=sf", "model.stem=torchvision", f"model.pretrained={weights}"]
    line = fails(train(manifest, out, *model), capsys)
    expected = f"model.pretrained: {reason.format(weights)}"
    if kind == "folder":
        expected = f"model.pretrained: {weights} {reason}"
    assert line.startswith(expected), line
    assert [str(warning.message) for warning in recwarn] == []  # none reaches stderr either
    untouched(out)


def test_a_file_that_loads_keeps_the_warnings_of_its_loading(tmp_path, monkeypatch):
    """Only a failed read drops what torch warned while reading."""
    from mmanet.models import sf

    def load(path: str, **kwargs: object) -> dict[str, torch.Tensor]:
        warnings.warn("a note from torch.load", UserWarning, stacklevel=1)
        return {"conv1.weight": torch.zeros(1)}

    monkeypatch.setattr(torch, "load", load)
    (tmp_path / "w.pth").write_bytes(b"weights")
    with pytest.warns(UserWarning, match="a note from torch.load"):
        weights = sf.read_torchvision_state_dict(str(tmp_path / "w.pth"))
    assert list(weights) == ["conv1.weight"]

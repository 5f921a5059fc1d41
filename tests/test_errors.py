"""Bad input through the CLI: exit code 2, one line on stderr naming the file, key or value;
nothing unpickled, nothing half written. The catalogue is docs/errors.md."""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmanet.cli import main
from mmanet.data.base import DataError

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "mfeat" / "demo.yaml")
ONE_EPOCH = [
    "optim.epochs=1",
    "optim.warmup_epochs=0",
    "optim.milestones=[]",
    "method.mar.warmup_epochs=0",
    "progress=false",
    "tensorboard=false",
    "method.name=sf_md",
]
MFEAT = ["--config", CONFIG, *ONE_EPOCH, "data.modalities=[fou,mor]"]
SMALL_NET = [
    "data.batch_size=4",
    "model.encoders.rgb.type=cnn",
    "model.encoders.rgb.widths=[4]",
    "model.encoder.widths=[8]",
    "model.head_widths=[8]",
]


def fails(args: Sequence[object], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI expecting exit code 2 and one ``mmanet: error:`` line; return the line.

    Warnings are recorded too: outside pytest they would be printed on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([str(arg) for arg in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("mmanet: error: ") and err.count("\n") == 1, err
    assert not caught, [str(w.message) for w in caught]
    return err.strip()


# --- datasets: a CSV manifest of small PNG / .npy files -----------------------------------------


def write_files(folder: Path, count: int = 8) -> list[list[str]]:
    """``count`` samples (4x4 RGB PNG, 3-vector .npy, label 0/1) and their manifest rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        Image.fromarray(np.full((4, 4, 3), 20 * i, dtype=np.uint8)).save(folder / f"{i}.png")
        np.save(folder / f"{i}.npy", np.full(3, float(i), dtype=np.float32))
        rows.append([f"{i}.png", f"{i}.npy", str(i % 2), ("train", "train", "val", "test")[i % 4]])
    return rows


def train_on(folder: Path, rows: list[list[str]], *extra: str) -> list[str]:
    """Write ``folder/m.csv`` from ``rows``; the arguments of a short run on it."""
    lines = ["rgb,depth,label,split", *(",".join(row) for row in rows)]
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    manifest = f"data.manifest.file={folder / 'm.csv'}"
    return ["train", "data.name=manifest", manifest, f"out={folder / 'run'}", *ONE_EPOCH, *extra]


def test_duplicated_manifest_rows_name_the_manifest_and_both_lines(tmp_path, capsys):
    rows = write_files(tmp_path)
    line = fails(train_on(tmp_path, [*rows, rows[0]], *SMALL_NET), capsys)
    assert line.endswith(f"{tmp_path / 'm.csv'}: line 10 duplicates line 2")
    assert not (tmp_path / "run").exists()


def test_a_duplicated_row_written_with_other_paths_is_named(tmp_path, capsys):
    rows = write_files(tmp_path)
    again = [f"../{tmp_path.name}/{rows[0][0]}", f"./{rows[0][1]}", *rows[0][2:]]
    line = fails(train_on(tmp_path, [*rows, again], *SMALL_NET), capsys)
    assert line.endswith(f"{tmp_path / 'm.csv'}: line 10 duplicates line 2")


def test_an_empty_split_is_named(tmp_path, capsys):
    rows = [[*row[:3], "train" if row[3] == "test" else row[3]] for row in write_files(tmp_path)]
    line = fails(train_on(tmp_path, rows, *SMALL_NET), capsys)
    assert line.endswith(f"{tmp_path / 'm.csv'}: the test split is empty")


def test_a_missing_file_names_the_manifest_line_and_file_before_training(tmp_path, capsys):
    rows = write_files(tmp_path)
    (tmp_path / "5.npy").unlink()
    line = fails(train_on(tmp_path, rows, *SMALL_NET), capsys)
    assert line.endswith(f"m.csv: line 7: file not found: {tmp_path / '5.npy'}")
    assert not (tmp_path / "run").exists()  # found before anything was written


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["3.png", "3.npy"], "line 5: wrong number of fields"),
        (["", "", "1", "test"], "line 5: no file for any modality (a sample needs one at least)"),
        (["3.png", "3.npy", "-1", "test"], "label -1 is negative"),
        (["3.png", "3.npy", "1", "dev"], "line 5: split 'dev' is not one of"),
    ],
    ids=["short row", "no file", "negative label", "unknown split"],
)
def test_bad_manifest_rows_are_named(tmp_path, capsys, row, message):
    rows = write_files(tmp_path)
    rows[3] = row
    line = fails(train_on(tmp_path, rows, *SMALL_NET), capsys)
    assert f"{tmp_path / 'm.csv'}: " in line and message in line


def test_a_missing_manifest_is_named(tmp_path, capsys):
    args = ["train", "data.name=manifest", f"data.manifest.file={tmp_path / 'no.csv'}"]
    args += ONE_EPOCH
    assert fails(args, capsys).endswith(f"manifest not found: {tmp_path / 'no.csv'}")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("garbage", "4.png: not an image file that can be decoded"),
        ("truncated", "4.png: image file is truncated"),
        ("grey", "line 6: {}4.png has shape (1, 4, 4), the other 'rgb' files (3, 4, 4)"),
        ("size", "line 6: {}4.png has shape (3, 5, 4), the other 'rgb' files (3, 4, 4)"),
        ("object array", "line 6: cannot read {}4.npy: dtype object is not a number type"),
    ],
)
def test_an_unusable_file_is_named_when_it_is_read(tmp_path, capsys, damage, message):
    rows = write_files(tmp_path)
    png = tmp_path / "4.png"
    if damage == "garbage":
        png.write_bytes(b"not a png")
    elif damage == "truncated":
        png.write_bytes(png.read_bytes()[:45])  # signature and header whole, pixels cut
    elif damage == "grey":
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(png)
    elif damage == "size":
        Image.fromarray(np.zeros((5, 4, 3), dtype=np.uint8)).save(png)
    else:  # a pickle disguised as an array: never loaded
        np.save(tmp_path / "4.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert message.format(f"{tmp_path}/") in fails(train_on(tmp_path, rows, *SMALL_NET), capsys)


def test_a_data_error_in_a_loader_worker_keeps_its_one_line(tmp_path, capsys):
    rows = write_files(tmp_path)
    np.save(tmp_path / "4.npy", np.array([0.0, np.nan, 1.0], dtype=np.float32))  # read there
    line = fails(train_on(tmp_path, rows, *SMALL_NET, "data.num_workers=1"), capsys)
    assert line == (
        f"mmanet: error: {tmp_path / 'm.csv'}: line 6: {tmp_path / '4.npy'} holds NaN or "
        "infinite values (1 of 3); set data.manifest.nonfinite=missing to count it as a missing "
        "modality"
    )


def test_a_worker_traceback_becomes_the_original_message():
    original = "/data/4.png: shape (3, 5, 4) differs"
    wrapped = (
        "Caught DataError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "worker.py", line 1, in _worker_loop\n'
        "    data = fetcher.fetch(index)\n"
        f"mmanet.data.base.DataError: {original}\n"
    )
    assert str(DataError(wrapped)) == original
    assert str(DataError("Caught nothing: a plain message")) == "Caught nothing: a plain message"


def test_a_missing_index_entry_names_the_list_line_and_file(tmp_path, capsys):
    from mmanet.data.seg_fixtures import write_nyuv2

    root = write_nyuv2(tmp_path / "nyuv2", n_train=2, n_test=1, size=(24, 32))
    with (root / "train.txt").open("a") as handle:
        handle.write("9999\n")
    args = ["train", "data.name=nyuv2", f"data.root={root}", f"out={tmp_path / 'run'}"]
    line = fails([*args, *ONE_EPOCH], capsys)
    assert f"{root / 'train.txt'}, line 3: file not found: " in line and "9999.png" in line


def test_a_modality_listed_twice_is_named(tmp_path, capsys):
    args = ["train", "--config", CONFIG, *ONE_EPOCH, f"out={tmp_path}", "data.modalities=[fou,fou]"]
    assert fails(args, capsys).endswith("data.modalities lists 'fou' twice: ['fou', 'fou']")


# --- checkpoints: a one-epoch run, copied and then damaged --------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A one-epoch sf_md run on two Multiple Features views."""
    run = tmp_path_factory.mktemp("errors") / "run"
    assert main(["train", *MFEAT, f"out={run}"]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path, capsys) -> Path:
    """A copy of the trained run that a test may damage."""
    capsys.readouterr()
    return Path(shutil.copytree(trained, tmp_path / "run"))


def checkpoint(run: Path) -> Path:
    return run / "checkpoints" / "epoch-0001"


class Payload:
    """Unpickled, it would create ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def disguise(path: Path, marker: Path, kind: str) -> None:
    """Replace ``path`` by a pickle of :class:`Payload` (plain, or torch.save's zip)."""
    if kind == "pickle":
        path.write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save(Payload(marker), path)


def reads(run: Path, command: str, out: Path) -> list[object]:
    """CLI arguments that load ``run``'s checkpoint weights."""
    if command == "evaluate":
        return ["evaluate", "--run", run, "--split", "val"]
    if command == "export":
        return ["export", "--checkpoint", run, "--out", out / "model.onnx"]
    np.save(out / "fou.npy", np.zeros(76, dtype=np.float32))
    return ["predict", "--checkpoint", run, "--fou", out / "fou.npy", "--out", out / "p.json"]


def nothing_written(run: Path, out: Path) -> None:
    assert not (run / "evaluations").exists()
    assert sorted(p.name for p in out.iterdir()) in ([], ["fou.npy"])  # no output, no .tmp


@pytest.mark.parametrize("command", ["evaluate", "export", "predict"])
def test_a_truncated_weights_file_is_named(run, tmp_path, capsys, command):
    weights = checkpoint(run) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    (out := tmp_path / "out").mkdir()
    line = fails(reads(run, command, out), capsys)
    assert line.endswith(
        f"cannot read {weights}: not a complete safetensors file "
        "(Error while deserializing header: incomplete metadata, file not fully covered)"
    )
    nothing_written(run, out)


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
@pytest.mark.parametrize("command", ["evaluate", "export", "predict"])
def test_a_pickle_disguised_as_the_weights_is_never_unpickled(run, tmp_path, capsys, command, kind):
    weights, marker = checkpoint(run) / "model.safetensors", tmp_path / "code-ran"
    disguise(weights, marker, kind)
    (out := tmp_path / "out").mkdir()
    line = fails(reads(run, command, out), capsys)
    assert f"cannot read {weights}: not a complete safetensors file (" in line
    assert not marker.exists()
    nothing_written(run, out)


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickle_disguised_as_the_training_state_is_never_unpickled(run, tmp_path, capsys, kind):
    state, marker = checkpoint(run) / "state.pt", tmp_path / "code-ran"
    disguise(state, marker, kind)
    line = fails(["train", "--resume", *MFEAT, f"out={run}"], capsys)
    assert line.endswith(
        f"cannot read {state}: it holds objects other than tensors and plain containers; "
        "refusing to unpickle it"
    )
    assert not marker.exists()


def test_a_truncated_training_state_is_named(run, capsys):
    state = checkpoint(run) / "state.pt"
    state.write_bytes(state.read_bytes()[:200])
    line = fails(["train", "--resume", *MFEAT, f"out={run}"], capsys)
    assert line.endswith(
        f"cannot read {state}: PytorchStreamReader failed reading zip archive: "
        "failed finding central directory"
    )


@pytest.mark.parametrize("name", ["model.safetensors", "state.pt"])
def test_a_missing_checkpoint_file_is_named(run, capsys, name):
    (checkpoint(run) / name).unlink()
    args = ["train", "--resume", *MFEAT, f"out={run}"]
    assert fails(args, capsys).endswith(f"{checkpoint(run) / name}: file not found")


def test_a_missing_checkpoint_folder_is_named(run, tmp_path, capsys):
    args = ["evaluate", "--run", run, "--checkpoint", tmp_path / "nowhere", "--split", "val"]
    assert fails(args, capsys).endswith(f"no checkpoint in {tmp_path / 'nowhere'}")
    assert not (run / "evaluations").exists()


def test_a_different_modality_list_is_named(run, capsys):
    evaluate = ["evaluate", "--run", run, "--split", "val", "data.modalities=[fou,kar]"]
    message = "trained on modalities ['fou', 'mor'], the {} has ['fou', 'kar']"
    assert fails(evaluate, capsys).endswith(f"{checkpoint(run)}: {message.format('data')}")
    saved = (run / "config.yaml").read_text()
    resume = ["train", "--resume", *MFEAT, f"out={run}", "data.modalities=[fou,kar]"]
    changed = "data.modalities: ['fou', 'mor'] -> ['fou', 'kar']"
    assert f"{run}: --resume with another configuration ({changed}); only " in fails(resume, capsys)
    assert not (run / "evaluations").exists()
    assert (run / "config.yaml").read_text() == saved  # a refused resume changes nothing


@pytest.mark.parametrize("widths", ["[32]", "[128,32]"])
def test_evaluate_with_another_architecture_names_the_differing_key(run, capsys, widths):
    args = ["evaluate", "--run", run, "--split", "val", f"model.head_widths={widths}"]
    given = widths.strip("[]").replace(",", ", ")
    expected = f"{checkpoint(run)}: trained with model.head_widths=[128, 64], not [{given}]"
    assert fails(args, capsys).endswith(expected)
    assert not (run / "evaluations").exists()


def test_export_names_the_weight_that_does_not_fit_its_meta(run, tmp_path, capsys):
    import json

    meta_file = checkpoint(run) / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["config"]["model"]["head_widths"] = [32]
    meta_file.write_text(json.dumps(meta))
    args = ["export", "--checkpoint", run, "--out", tmp_path / "model.onnx"]
    line = fails(args, capsys)
    assert line.endswith(
        f"{checkpoint(run)}: weight 'head.trunk.4.bias' is unexpected in the checkpoint "
        "(wrong architecture?)"
    )
    assert list(tmp_path.iterdir()) == [run]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{broken", "not JSON (Expecting property name enclosed in double quotes"),
        ("[1, 2]", "expected a JSON object, got list"),
    ],
)
def test_a_broken_meta_file_is_named(run, tmp_path, capsys, content, message):
    (checkpoint(run) / "meta.json").write_text(content)
    args = ["export", "--checkpoint", run, "--out", tmp_path / "model.onnx"]
    assert f"{checkpoint(run) / 'meta.json'}: " in (line := fails(args, capsys))
    assert message in line

"""Real datasets as they come (docs/your_data.md): empty manifest cells are missing
modalities; NaN / inf in a file, labels that leave a class without training samples and
a wrongly shaped file are one-line errors naming the fault; a byte-order mark is skipped;
``predict --manifest`` reads paths from the manifest's folder. Every refused command exits
with 2 and leaves what was already written as it was (docs/errors.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmanet.cli import main
from mmanet.config import build_config
from mmanet.data import build_data, collate, data_config
from mmanet.data.base import AVAILABLE_KEY, DataError, read_array, read_header
from mmanet.models import build_model
from test_errors import ONE_EPOCH

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "manifest" / "example.yaml"
SPLITS = ("train", "train", "val", "test")  # row i's split: i % 4
FAST = [
    *ONE_EPOCH,
    "data.batch_size=8",  # more than the 6 training samples: each is read every epoch
    "model.encoder.widths=[8]",
    "model.head_widths=[8]",
]
NOTE = b"written before the command\n"


def make_rows(folder: Path, count: int = 12) -> list[list[str]]:
    """``count`` samples of two .npy modalities, a (4,) and b (3,), label i % 2, split
    SPLITS[i % 4]; manifest line i + 2 is sample i."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        np.save(folder / f"a{i}.npy", rng.normal(i % 2, 1.0, 4).astype(np.float32))
        np.save(folder / f"b{i}.npy", rng.normal(i % 2, 1.0, 3).astype(np.float32))
        rows.append([f"a{i}.npy", f"b{i}.npy", str(i % 2), SPLITS[i % 4]])
    return rows


def write_manifest(
    folder: Path, rows: Sequence[Sequence[str]], header: str = "a,b,label,split", prefix: str = ""
) -> Path:
    path = folder / "m.csv"
    lines = [header, *(",".join(row) for row in rows)]
    path.write_text(prefix + "\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A run folder that already holds a file, which a refused command must leave alone."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(NOTE)
    return folder


def train(manifest: Path, out: Path, *extra: str) -> list[str]:
    data = ["data.name=manifest", f"data.manifest.file={manifest}"]
    return ["train", *data, f"out={out}", *FAST, *extra]


def fails(args: Sequence[object], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI expecting exit code 2 and one ``mmanet: error:`` line; its message."""
    code = main([str(arg) for arg in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("mmanet: error: ") and err.count("\n") == 1, err
    return err.removeprefix("mmanet: error: ").rstrip("\n")


def untouched(out: Path, loaded: bool = False) -> None:
    """The file written before is as it was and no result appeared; a command refused
    before its data loaded (``loaded=False``) wrote nothing at all."""
    assert (out / "notes.txt").read_bytes() == NOTE
    assert not list(out.glob("results*")) and not list(out.glob(".*.tmp"))
    if not loaded:
        assert [p.name for p in out.iterdir()] == ["notes.txt"]


# --- 1. empty cells: a sample that lacks a modality ---------------------------------------------


def test_empty_cells_are_missing_modalities_in_every_batch(tmp_path):
    rows = make_rows(tmp_path)
    rows[0][0] = ""  # the first row lacks a: its shape comes from the other files
    rows[4][1] = " "  # a blank cell is empty too
    rows[3][0] = ""  # a test sample
    data = build_data(data_config("manifest", file=str(write_manifest(tmp_path, rows))))
    assert data.input_shapes == {"a": (4,), "b": (3,)}
    expected = torch.ones(6, 2, dtype=torch.bool)  # train: samples 0, 1, 4, 5, 8, 9
    expected[0, 0] = expected[2, 1] = False
    assert torch.equal(data.train.availability, expected)
    assert torch.equal(data.availability(data.train), expected)
    inputs, labels = collate([data.train[i] for i in range(len(data.train))])
    assert torch.equal(inputs[AVAILABLE_KEY], expected.float())
    assert torch.equal(inputs["a"][0], torch.zeros(4)) and torch.equal(
        inputs["b"][2], torch.zeros(3)
    )
    assert torch.equal(inputs["a"][1], torch.from_numpy(np.load(tmp_path / "a1.npy")))
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]
    test_inputs, _ = collate([data.test[i] for i in range(len(data.test))])
    assert test_inputs[AVAILABLE_KEY].tolist() == [[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    val_inputs, _ = collate([data.val[i] for i in range(len(data.val))])
    assert val_inputs[AVAILABLE_KEY].tolist() == [[1.0, 1.0]] * 3  # every split has the key


def test_a_complete_manifest_has_no_availability_key(tmp_path):
    data = build_data(
        data_config("manifest", file=str(write_manifest(tmp_path, make_rows(tmp_path))))
    )
    inputs, _ = collate([data.train[i] for i in range(len(data.train))])
    assert set(inputs) == {"a", "b"}
    assert bool(data.train.availability.all()) and data.train.availability.shape == (6, 2)


@pytest.mark.slow
def test_a_manifest_with_empty_cells_trains(tmp_path, capsys):
    rows = make_rows(tmp_path, 24)
    for i in (0, 5, 10, 19):
        rows[i][i % 2] = ""
    manifest = write_manifest(tmp_path, rows)
    assert main(train(manifest, tmp_path / "run", "optim.epochs=2")) == 0
    assert (tmp_path / "run" / "results_test.json").is_file()


def test_a_row_without_any_file_is_one_line(tmp_path, out, capsys):
    rows = make_rows(tmp_path)
    rows[5][:2] = ["", ""]
    manifest = write_manifest(tmp_path, rows)
    assert fails(train(manifest, out), capsys) == (
        f"{manifest}: line 7: no file for any modality (a sample needs one at least)"
    )
    untouched(out)


def test_a_modality_without_any_file_is_one_line(tmp_path, out, capsys):
    rows = [[a, "", label, split] for a, _, label, split in make_rows(tmp_path)]
    manifest = write_manifest(tmp_path, rows)
    assert fails(train(manifest, out), capsys) == f"{manifest}: no row has a file for modality 'b'"
    untouched(out)


# --- 2. NaN / inf in a file ---------------------------------------------------------------------


@pytest.mark.parametrize(("row", "value"), [(1, np.nan), (3, np.inf), (7, -np.inf)])
def test_a_nonfinite_file_is_named_in_every_split(tmp_path, out, capsys, row, value):
    rows = make_rows(tmp_path)  # rows 1 and 7: train, row 3: test (read after training)
    np.save(tmp_path / f"a{row}.npy", np.array([0.0, 1.0, value, 2.0], dtype=np.float32))
    manifest = write_manifest(tmp_path, rows)
    assert fails(train(manifest, out), capsys) == (
        f"{manifest}: line {row + 2}: {tmp_path / f'a{row}.npy'} holds NaN or infinite values "
        "(1 of 4); set data.manifest.nonfinite=missing to count it as a missing modality"
    )
    untouched(out, loaded=True)


def test_a_nonfinite_file_is_named_whichever_split_reads_it(tmp_path):
    rows = make_rows(tmp_path)
    for i in (1, 2, 3):  # train, val, test
        np.save(tmp_path / f"b{i}.npy", np.array([0.0, np.nan, 0.0], dtype=np.float32))
    manifest = write_manifest(tmp_path, rows)
    data = build_data(data_config("manifest", file=str(manifest)))
    for split, line in (("train", 3), ("val", 4), ("test", 5)):
        with pytest.raises(DataError, match=rf"line {line}: .*b{line - 2}\.npy holds NaN"):
            data.split(split)[0 if split != "train" else 1]


def test_nonfinite_missing_makes_that_modality_missing(tmp_path):
    rows = make_rows(tmp_path)
    np.save(tmp_path / "b3.npy", np.full(3, np.nan, dtype=np.float32))  # a test sample
    np.save(tmp_path / "a4.npy", np.array([0.0, np.inf, 0.0, 0.0], dtype=np.float32))
    np.save(tmp_path / "a5.npy", np.arange(4))  # integers: never NaN, so never read up front
    manifest = str(write_manifest(tmp_path, rows))
    data = build_data(data_config("manifest", file=manifest, nonfinite="missing"))
    assert data.test.availability.tolist() == [[True, False], [True, True], [True, True]]
    assert data.train.availability[2].tolist() == [False, True]  # sample 4
    inputs, _ = data.test[0]
    assert torch.equal(inputs["b"], torch.zeros(3))
    assert inputs[AVAILABLE_KEY].tolist() == [1.0, 0.0]


def test_a_row_left_without_a_finite_file_is_one_line(tmp_path, out, capsys):
    rows = make_rows(tmp_path)
    for name in ("a6.npy", "b6.npy"):
        np.save(tmp_path / name, np.full(4 if name[0] == "a" else 3, np.nan, dtype=np.float32))
    manifest = write_manifest(tmp_path, rows)
    assert fails(train(manifest, out, "data.manifest.nonfinite=missing"), capsys) == (
        f"{manifest}: line 8: no modality left, every file holds NaN or infinite values "
        "(data.manifest.nonfinite=missing)"
    )
    untouched(out)


@pytest.mark.slow
def test_nonfinite_missing_trains(tmp_path):
    rows = make_rows(tmp_path, 16)
    for i in (1, 6, 11):
        np.save(tmp_path / f"a{i}.npy", np.full(4, np.nan, dtype=np.float32))
    manifest = write_manifest(tmp_path, rows)
    assert main(train(manifest, tmp_path / "run", "data.manifest.nonfinite=missing")) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A one-epoch run on a complete manifest of the modalities a (4,) and b (3,)."""
    root = tmp_path_factory.mktemp("inputs")
    data = root / "data"
    manifest = write_manifest(data, make_rows(data))
    assert main(train(manifest, root / "run")) == 0
    return root / "run"


def test_predict_refuses_a_nonfinite_input(trained, tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.array([0.0, np.nan, 0.0, 0.0], dtype=np.float32))
    (tmp_path / "p.json").write_bytes(NOTE)
    args = ["predict", "--checkpoint", trained, "--a", tmp_path / "a.npy"]
    assert fails([*args, "--out", tmp_path / "p.json"], capsys) == (
        f"{tmp_path / 'a.npy'}: holds NaN or infinite values (1 of 4), given for modality 'a'"
    )
    assert (tmp_path / "p.json").read_bytes() == NOTE


def test_predict_manifest_refuses_a_nonfinite_input(trained, tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros(4, dtype=np.float32))
    np.save(tmp_path / "b.npy", np.array([np.inf, 0.0, 0.0], dtype=np.float32))
    (tmp_path / "inputs.csv").write_text("a,b\na.npy,\n,b.npy\n")
    (tmp_path / "p.csv").write_bytes(NOTE)
    args = ["--manifest", tmp_path / "inputs.csv", "--out", tmp_path / "p.csv"]
    assert fails(["predict", "--checkpoint", trained, *args], capsys) == (
        f"{tmp_path / 'inputs.csv'}: line 3: {tmp_path / 'b.npy'}: holds NaN or infinite "
        "values (1 of 3), given for modality 'b'"
    )
    assert (tmp_path / "p.csv").read_bytes() == NOTE


# --- 3. a byte-order mark -----------------------------------------------------------------------


def test_a_byte_order_mark_is_skipped(tmp_path, capsys):
    rows = [[label, a, b, split] for a, b, label, split in make_rows(tmp_path)]
    manifest = write_manifest(tmp_path, rows, header="label,a,b,split", prefix="\ufeff")
    assert manifest.read_bytes().startswith(b"\xef\xbb\xbflabel,")  # as Excel writes it
    assert main(train(manifest, tmp_path / "run")) == 0
    report = json.loads((tmp_path / "run" / "results_test.json").read_text())
    assert list(report["combinations"])[:3] == ["a", "b", "a+b"]


def test_a_manifest_that_is_not_utf8_is_one_line(tmp_path, out, capsys):
    rows = make_rows(tmp_path)
    manifest = write_manifest(tmp_path, rows)
    manifest.write_bytes(manifest.read_bytes().replace(b"a0.npy", b"\xe90.npy"))  # latin-1 'é'
    assert fails(train(manifest, out), capsys) == (
        f"{manifest}: line 2 is not UTF-8 text; save the manifest as CSV UTF-8"
    )
    untouched(out)


# --- 4. labels ----------------------------------------------------------------------------------


def relabel(rows: list[list[str]], labels: Sequence[str]) -> list[list[str]]:
    return [[a, b, label, split] for (a, b, _, split), label in zip(rows, labels, strict=True)]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            ["1", "1", "0", "0"] * 3,
            "the training split has one class only (class 1); a classifier needs two at least",
        ),
        (
            [str(i % 3 + 1) for i in range(12)],
            "class 0 has no sample (the labels are 1..3); integer labels are class indices: "
            "number the classes 0..2, or use class names",
        ),
        (
            ["0", "1", "2", "1"] * 3,
            "class 2 is in the val split but has no training sample",
        ),
        (
            ["cat", "dog", "cat", "bird"] * 3,
            "class 'bird' is in the test split but has no training sample",
        ),
        (["0", "1", "0", ""] * 3, "line 5: no label"),
    ],
    ids=["one class", "labels 1..k", "int class only in val", "name only in test", "no label"],
)
def test_labels_that_leave_a_class_without_training_samples(tmp_path, out, capsys, labels, message):
    manifest = write_manifest(tmp_path, relabel(make_rows(tmp_path), labels))
    assert fails(train(manifest, out), capsys) == f"{manifest}: {message}"
    untouched(out)


# --- 5. shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", [0, 7])
def test_the_file_of_another_shape_is_named_even_when_first(tmp_path, out, capsys, wrong):
    rows = make_rows(tmp_path)
    np.save(tmp_path / f"a{wrong}.npy", np.zeros((3, 5), dtype=np.float32))
    manifest = write_manifest(tmp_path, rows)
    assert fails(train(manifest, out), capsys) == (
        f"{manifest}: line {wrong + 2}: {tmp_path / f'a{wrong}.npy'} has shape (3, 5), "
        "the other 'a' files (4,)"
    )
    untouched(out)


def test_an_image_of_another_size_is_named_when_the_manifest_loads(tmp_path, out, capsys):
    rows = make_rows(tmp_path)
    for i, row in enumerate(rows):
        size = (6, 4) if i == 0 else (5, 4)
        Image.fromarray(np.zeros((*size, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        row[1] = f"{i}.png"
    manifest = write_manifest(tmp_path, rows)
    assert fails(train(manifest, out), capsys) == (
        f"{manifest}: line 2: {tmp_path / '0.png'} has shape (3, 6, 4), the other 'b' files "
        "(3, 5, 4)"
    )
    untouched(out)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "F"])
def test_the_header_shape_is_the_shape_read(tmp_path, mode):
    path = tmp_path / ("x.tiff" if mode == "F" else "x.png")
    Image.new(mode, (5, 3)).save(path)
    assert read_header(path).shape == tuple(read_array(path).shape)
    assert read_header(path).floating == (mode == "F")


@pytest.mark.parametrize("dtype", ["float64", "int16", "uint8", "bool", "float16"])
def test_the_npy_header_shape_is_the_shape_read(tmp_path, dtype):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 1), dtype=dtype))
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((2, 3), dtype=dtype)))
    for name in ("x.npy", "f.npy"):
        header = read_header(tmp_path / name)
        assert header.shape == tuple(read_array(tmp_path / name).shape)
        assert header.floating == dtype.startswith("float")


# --- 6. predict --manifest reads paths from the manifest's folder -------------------------------


def test_predict_manifest_paths_are_relative_to_the_manifest(
    trained, tmp_path, capsys, monkeypatch
):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "a.npy", np.zeros(4, dtype=np.float32))
    np.save(inputs / "b.npy", np.ones(3, dtype=np.float32))
    (inputs / "m.csv").write_text("\ufeffa,b\na.npy,b.npy\n,b.npy\n", encoding="utf-8")
    (elsewhere := tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(elsewhere)  # nothing of the manifest's is here
    args = ["predict", "--checkpoint", str(trained), "--manifest", str(inputs / "m.csv")]
    assert main([*args, "--out", "p.csv"]) == 0
    lines = (elsewhere / "p.csv").read_text().splitlines()
    assert lines[0] == "row,modalities,0,1"
    assert lines[1].startswith("0,a+b,") and lines[2].startswith("1,b,")


def test_predict_manifest_names_a_missing_file_where_it_looked(trained, tmp_path, capsys):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "m.csv").write_text("a,b\nnope.npy,\n")
    (tmp_path / "p.csv").write_bytes(NOTE)
    args = ["--manifest", tmp_path / "inputs" / "m.csv", "--out", tmp_path / "p.csv"]
    assert fails(["predict", "--checkpoint", trained, *args], capsys) == (
        f"{tmp_path / 'inputs' / 'm.csv'}: line 2: {tmp_path / 'inputs' / 'nope.npy'}: "
        "file not found (given for modality 'a')"
    )
    assert (tmp_path / "p.csv").read_bytes() == NOTE


def test_predict_manifest_names_a_row_without_files(trained, tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros(4, dtype=np.float32))
    (tmp_path / "m.csv").write_text("a,b\na.npy,\n,\n")
    args = ["--manifest", tmp_path / "m.csv", "--out", tmp_path / "p.csv"]
    message = fails(["predict", "--checkpoint", trained, *args], capsys)
    assert message == f"{tmp_path / 'm.csv'}: line 3: no modality given"
    assert not (tmp_path / "p.csv").exists()


# --- 7. the example config for your own manifest ------------------------------------------------


@pytest.mark.parametrize("method", ["teacher", "mmanet"])
def test_the_example_config_builds_on_a_manifest(tmp_path, method):
    rows = []
    for i, (a, _, label, split) in enumerate(make_rows(tmp_path)):
        Image.fromarray(np.full((8, 8, 3), 20 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append([f"{i}.png", a, label, split])
    manifest = write_manifest(tmp_path, rows, header="rgb,depth,label,split")
    extra = ["method.teacher=runs/teacher"] if method == "mmanet" else []
    overrides = [f"data.manifest.file={manifest}", f"method.name={method}", *extra]
    config = build_config(EXAMPLE, overrides)
    assert config.data.name == "manifest" and config.optim.epochs > config.method.mar.warmup_epochs
    data = build_data(config.data)
    model = build_model(
        config.model, data.modalities, data.input_shapes, data.num_classes, reg_head=True
    )
    batch, _ = collate([data.train[i] for i in range(4)])
    assert model(batch).logits.shape == (4, 2)

"""The bundled Multiple Features data and bring-your-own manifests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmanet.config import DataConfig
from mmanet.data import DataError, build_data, data_config
from mmanet.data.mfeat import default_root, read_view


def test_mfeat_split_is_fixed_stratified_and_standardised_on_train(mfeat):
    assert mfeat.modalities == ["fou", "fac", "kar", "pix", "zer", "mor"]
    assert (len(mfeat.train), len(mfeat.val), len(mfeat.test)) == (1200, 300, 500)
    assert mfeat.input_shapes == {
        "fou": (76,),
        "fac": (216,),
        "kar": (64,),
        "pix": (240,),
        "zer": (47,),
        "mor": (6,),
    }
    for split, per_class in ((mfeat.train, 120), (mfeat.val, 30), (mfeat.test, 50)):
        assert torch.bincount(split.labels).tolist() == [per_class] * 10
    train = mfeat.train.views["fou"]
    assert torch.allclose(train.mean(0), torch.zeros(76), atol=1e-5)
    assert torch.allclose(train.std(0, unbiased=False), torch.ones(76), atol=1e-4)
    # The test split is standardised with the training statistics, not its own.
    _, labels = read_view(default_root(), "fou")
    assert labels.tolist() == sorted(labels.tolist()) and len(labels) == 2000
    assert not torch.allclose(mfeat.test.views["fou"].mean(0), torch.zeros(76), atol=1e-2)


def test_mfeat_split_is_reproducible_and_disjoint():
    a = build_data(DataConfig(modalities=["fou", "mor"]))
    b = build_data(DataConfig(modalities=["fou", "mor"]))
    assert torch.equal(a.test.views["mor"], b.test.views["mor"])
    rows = {tuple(np.round(x.numpy(), 4)) for s in (a.train, a.val, a.test) for x in s.views["fou"]}
    assert len(rows) >= 1990  # a few digits share Fourier features; the splits do not overlap


def test_mfeat_unknown_view_is_named():
    with pytest.raises(DataError, match="unknown Multiple Features view 'rgb'"):
        build_data(DataConfig(modalities=["fou", "rgb"]))


def write_manifest(tmp_path, rows, header="rgb,depth,label,split"):
    (tmp_path / "manifest.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return tmp_path / "manifest.csv"


def make_files(tmp_path, n=12):
    rows = []
    for i in range(n):
        Image.fromarray(np.full((4, 5, 3), 20 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        np.save(tmp_path / f"{i}.npy", np.full((2, 4, 5), float(i), dtype=np.float32))
        split = ("train", "train", "val", "test")[i % 4]
        rows.append(f"{i}.png,{i}.npy,{'cat' if i % 2 else 'dog'},{split}")
    return rows


def test_manifest_reads_images_and_arrays_with_named_labels(tmp_path):
    path = write_manifest(tmp_path, make_files(tmp_path))
    data = build_data(data_config("manifest", file=str(path)))
    assert data.modalities == ["rgb", "depth"]
    assert data.class_names == ["cat", "dog"]
    assert data.input_shapes == {"rgb": (3, 4, 5), "depth": (2, 4, 5)}
    assert (len(data.train), len(data.val), len(data.test)) == (6, 3, 3)
    sample, label = data.train[1]  # row 1: "1.png", label cat
    assert label == 0
    assert torch.allclose(sample["rgb"], torch.full((3, 4, 5), 20 / 255))
    assert torch.equal(sample["depth"], torch.full((2, 4, 5), 1.0))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rows: [*rows, rows[0]], "line 14 duplicates line 2"),
        (lambda rows: [r.replace("0.npy", "missing.npy") for r in rows], "missing.npy"),
        (lambda rows: [r.replace(",test", ",train") for r in rows], "the test split is empty"),
        (lambda rows: [r.replace(",val", ",dev") for r in rows], "split 'dev'"),
    ],
)
def test_manifest_errors_name_the_fault(tmp_path, mutate, message):
    path = write_manifest(tmp_path, mutate(make_files(tmp_path)))
    with pytest.raises(DataError, match=message):
        data = build_data(data_config("manifest", file=str(path)))
        for i in range(len(data.train)):
            data.train[i]


def test_manifest_wrong_shape_and_missing_column(tmp_path):
    rows = make_files(tmp_path)
    np.save(tmp_path / "3.npy", np.zeros((2, 4, 4), dtype=np.float32))  # row 3 is a test row
    # found when the manifest loads (every file's header), not when the sample is read
    with pytest.raises(DataError, match=r"line 5: .*3\.npy has shape \(2, 4, 4\), the other"):
        build_data(data_config("manifest", file=str(write_manifest(tmp_path, rows))))
    with pytest.raises(DataError, match="no column for modality 'ir'"):
        build_data(
            data_config("manifest", file=str(tmp_path / "manifest.csv"), modalities=["rgb", "ir"])
        )

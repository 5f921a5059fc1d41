"""Input readers: a file given to predict (or described in the ONNX sidecar) becomes exactly
the input the dataset's test split gives for that file, from the run's config alone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmanet import predict
from mmanet.cli import main
from mmanet.config import DataConfig
from mmanet.data import (
    ArrayReader,
    DataError,
    build_data,
    data_config,
    input_reader,
    register_dataset,
)
from mmanet.data.base import read_array
from mmanet.data.cityscapes import load_cityscapes
from mmanet.data.fixtures import write_casia_surf
from mmanet.data.render_rgbd import render_dataset
from mmanet.data.seg_fixtures import write_cityscapes, write_nyuv2
from mmanet.engine import load_network

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STORED = (24, 32)  # the fixtures' image size (height, width)
SIZE = [20, 28]  # data.<dataset>.size: the evaluation transform resizes


def assert_reader_matches_test_split(cfg: DataConfig, files, modalities) -> None:
    """The reader (made without the data root) on each test-split file of ``files(bundle)``
    gives that sample's input exactly."""
    bundle = build_data(cfg)
    reader = input_reader(replace(cfg, root=None))
    for index in range(len(bundle.test)):
        inputs, _ = bundle.test[index]
        for name in modalities:
            path = files(bundle.test.records[index], name)
            read = reader.read(path, name, bundle.input_shapes[name])
            assert read.dtype == torch.float32
            assert torch.equal(read, inputs[name]), (path, (read - inputs[name]).abs().max())


def rgbd_file(record, name):
    return getattr(record, name)


@pytest.fixture(scope="module")
def nyuv2_root(tmp_path_factory):
    return write_nyuv2(tmp_path_factory.mktemp("nyuv2"), n_train=1, n_test=3, size=STORED)


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    return write_cityscapes(tmp_path_factory.mktemp("city"), 8, 2, size=STORED)


@pytest.mark.parametrize(
    "statistics",
    [{}, {"depth_mode": "raw", "depth_mean": 2000.0, "depth_std": 500.0}],
    ids=["refined-default-statistics", "raw-run-statistics"],
)
def test_nyuv2_reader_gives_the_test_split_input(nyuv2_root, statistics):
    cfg = data_config("nyuv2", root=str(nyuv2_root), size=SIZE, **statistics)
    assert_reader_matches_test_split(cfg, rgbd_file, ("rgb", "depth"))


def test_cityscapes_reader_reads_disparity_as_the_loader(cityscapes_root):
    cfg = data_config("cityscapes", root=str(cityscapes_root), size=SIZE)
    assert_reader_matches_test_split(cfg, rgbd_file, ("rgb", "depth"))


def test_rendered_reader_gives_the_test_split_input(tmp_path):
    root = render_dataset(tmp_path / "rendered", 2, 3, STORED, seed=0, workers=1, n_val=1)
    cfg = data_config("rendered", root=str(root), size=SIZE)
    depth = np.asarray(Image.open(root / "test" / "depth" / "0000.png"))
    assert (depth == 0).any()  # holes: kept at 0 by the reader too
    assert_reader_matches_test_split(cfg, rgbd_file, ("rgb", "depth"))


def test_casia_surf_reader_gives_the_test_split_input(tmp_path):
    root = write_casia_surf(tmp_path / "casia", n_per_split=3, size=40)
    cfg = data_config("casia_surf", root=str(root), image_size=24, resize=32)
    assert_reader_matches_test_split(
        cfg, lambda record, name: record.paths[name], ("rgb", "depth", "ir")
    )


def test_reader_shape_mismatch_names_the_file(nyuv2_root):
    reader = input_reader(data_config("nyuv2", size=SIZE))
    path = nyuv2_root / "test" / "rgb" / "0002.png"
    with pytest.raises(DataError, match=r"0002\.png: rgb input of shape \(3, 20, 28\), the "):
        reader.read(path, "rgb", (3, *STORED))


def test_function_only_dataset_gets_the_default_reader(tmp_path):
    @register_dataset("readers_test_function")
    def build(cfg: DataConfig):
        raise AssertionError("a reader needs no data")

    try:
        cfg = DataConfig(name="readers_test_function")
        reader = input_reader(cfg)
    finally:
        from mmanet.registry import DATASETS

        DATASETS.unregister("readers_test_function")
    assert type(reader) is ArrayReader
    for name in ("mfeat", "manifest"):
        assert type(input_reader(DataConfig(name=name))) is ArrayReader
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 9
    Image.fromarray(pixels).save(tmp_path / "image.png")
    np.save(tmp_path / "array.npy", np.full((4,), 7, dtype=np.float64))
    image = reader.read(tmp_path / "image.png", "x", (3, 2, 3))
    assert torch.equal(image, read_array(tmp_path / "image.png"))  # as the manifest loader
    assert torch.equal(image, torch.from_numpy(pixels.transpose(2, 0, 1) / np.float32(255)))
    array = reader.read(tmp_path / "array.npy", "y", (4,))
    assert array.dtype == torch.float32 and torch.equal(array, torch.full((4,), 7.0))
    assert "as given" in reader.describe("y")


@pytest.fixture(scope="module")
def cityscapes_run(tmp_path_factory, cityscapes_root):
    """A one-epoch tiny ESANet teacher on the Cityscapes fixture."""
    run = tmp_path_factory.mktemp("runs") / "teacher"
    tiny = [
        f"data.root={cityscapes_root}",
        f"data.cityscapes.size=[{STORED[0]},{STORED[1]}]",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "data.num_workers=0",
        "device=cpu",
        "progress=false",
        "tensorboard=false",
        "model.esanet.encoder=resnet18",
        "model.esanet.width=8",
        "model.esanet.decoder_channels=[16,8,8]",
        "model.esanet.context_bins=[1,2]",
        "model.pretrained=null",
        "optim.epochs=1",
    ]
    config = CONFIGS / "cityscapes" / "teacher.yaml"
    assert main(["train", "--config", str(config), f"out={run}", *tiny]) == 0
    return run


def test_cityscapes_depth_through_predict_matches_the_loader(
    cityscapes_run, cityscapes_root, monkeypatch
):
    """A disparity PNG given to predict reaches the network as the loader's depth input."""
    fed = []

    def spied_load_network(*args, **kwargs):
        model, meta = load_network(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, args: fed.append(args[0]))
        return model, meta

    monkeypatch.setattr(predict, "load_network", spied_load_network)
    test = load_cityscapes(cityscapes_root, size=STORED, augment=False).test
    for index in range(len(test)):
        result, _ = predict.predict_files(cityscapes_run, {"depth": test.records[index].depth})
        assert result["modalities_used"] == ["depth"]
        expected = test[index][0]["depth"]
        assert torch.allclose(fed[-1]["depth"][0], expected, atol=1e-6, rtol=0)


def test_onnx_sidecar_records_each_inputs_shape_dtype_and_preprocessing(tmp_path):
    """A CASIA-SURF run's export: every modality's line is its face reader's."""
    root = write_casia_surf(tmp_path / "casia", n_per_split=4, size=40)
    run, out = tmp_path / "run", tmp_path / "surf.onnx"
    short = ["optim.epochs=1", "optim.warmup_epochs=0", "optim.milestones=[]"]
    images = ["data.casia_surf.image_size=32", "data.casia_surf.resize=40"]
    images += ["data.batch_size=4", "data.num_workers=0"]
    quiet = ["device=cpu", "progress=false", "tensorboard=false", f"data.root={root}"]
    config = CONFIGS / "casia_surf" / "teacher.yaml"
    assert main(["train", "--config", str(config), f"out={run}", *short, *images, *quiet]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    sidecar = json.loads((tmp_path / "surf.onnx.json").read_text())
    inputs = sidecar["inputs"]
    assert list(inputs) == ["rgb", "depth", "ir", "mask"]
    reader = input_reader(data_config("casia_surf", image_size=32))
    for name in ("rgb", "depth", "ir"):
        assert inputs[name] == {
            "shape": ["batch", 3, 32, 32],
            "dtype": "float32",
            "preprocessing": reader.describe(name),
        }
        assert "32×32, (x − 127.5)/128, 3 channels" in inputs[name]["preprocessing"]
    assert inputs["mask"] == {
        "shape": ["batch", 3],
        "dtype": "float32",
        "preprocessing": "0/1 presence of each modality, in the order rgb, depth, ir",
    }

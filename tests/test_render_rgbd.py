"""The rendered RGB-D dataset: layout, dtypes, metric depth, sensor model, determinism, cache."""

import json

import numpy as np
import pytest
from PIL import Image

from mmanet.data import render_rgbd
from mmanet.data.render_rgbd import (
    NUM_CLASSES,
    _Scene,
    cached_dataset,
    depth_noise_std,
    render_dataset,
    render_sample,
)

SMALL = {"n_train": 8, "n_test": 4, "n_val": 3, "size": (24, 32)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return render_dataset(tmp_path_factory.mktemp("rgbd") / "data", seed=0, workers=2, **SMALL)


@pytest.fixture(scope="module")
def samples():
    scene = _Scene()
    try:
        yield [render_sample(0, "train", index, (48, 64), scene=scene) for index in range(12)]
    finally:
        scene.close()


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_layout_and_dtypes(dataset):
    assert (dataset / "train.txt").read_text().split() == [f"{i:04d}" for i in range(8)]
    assert (dataset / "test.txt").read_text().split() == [f"{i:04d}" for i in range(4)]
    assert len((dataset / "class_names.txt").read_text().split()) == NUM_CLASSES
    record = json.loads((dataset / "generator.json").read_text())
    assert record["seed"] == 0 and record["size"] == [24, 32] and record["n_train"] == 8
    assert not list(dataset.parent.glob("*.partial-*"))
    all_labels = []
    for split, count in (("train", 8), ("test", 4)):
        for index in range(count):
            name = f"{index:04d}.png"
            rgb = np.asarray(Image.open(dataset / split / "rgb" / name))
            depth = np.asarray(Image.open(dataset / split / "depth" / name))
            labels = np.asarray(Image.open(dataset / split / f"labels_{NUM_CLASSES}" / name))
            assert rgb.dtype == np.uint8 and rgb.shape == (24, 32, 3)
            assert depth.dtype == np.uint16 and depth.shape == (24, 32)
            assert labels.dtype == np.uint8 and labels.shape == (24, 32)
            assert labels.max() <= NUM_CLASSES
            all_labels.append(labels)
    present = np.unique(np.concatenate([labels.ravel() for labels in all_labels]))
    assert {1, 2} <= set(present.tolist())  # floor and table
    assert len(present) >= 5


def test_depth_is_metric_and_plausible(samples):
    assert np.mean([(sample.depth_mm > 0).mean() for sample in samples]) > 0.6
    for sample in samples:
        valid = sample.depth_mm > 0
        assert valid.mean() > 0.2  # low cameras see floor beyond the sensor's range
        median_m = np.median(sample.depth_mm[valid]) / 1000.0
        assert 0.5 < median_m < 3.5  # camera 0.9-1.9 m from a point on the table
        clean = sample.clean_depth_m[valid]
        assert np.abs(sample.depth_mm[valid] / 1000.0 - clean).max() < 0.5


def test_sensor_holes_and_noise_grow_with_distance(samples):
    residuals, depths, hole_at_edge, hole_elsewhere = [], [], [], []
    for sample in samples:
        clean = sample.clean_depth_m
        in_range = (clean > 0.4) & (clean < 4.0)
        valid = sample.depth_mm > 0
        residuals.append(sample.depth_mm[valid] / 1000.0 - clean[valid])
        depths.append(clean[valid])
        gy, gx = np.gradient(clean)
        edge = in_range & (np.hypot(gx, gy) > 0.05 * clean)
        hole_at_edge.append(~valid[edge])
        hole_elsewhere.append(~valid[in_range & ~edge])
    residuals, depths = np.concatenate(residuals), np.concatenate(depths)
    near, far = depths < np.quantile(depths, 0.25), depths > np.quantile(depths, 0.75)
    assert residuals[far].std() > 1.3 * residuals[near].std()
    expected = np.sqrt(np.mean(depth_noise_std(depths[far]) ** 2))
    assert 0.7 * expected < residuals[far].std() < 1.3 * expected
    edge_rate = np.concatenate(hole_at_edge).mean()
    other_rate = np.concatenate(hole_elsewhere).mean()
    assert 0 < other_rate < 0.3 and edge_rate > 2 * other_rate


def test_some_scenes_are_under_exposed(samples):
    flags = [sample.under_exposed for sample in samples]
    assert any(flags) and not all(flags)
    dark = [s.rgb.mean() / max(s.clean_rgb.mean(), 1) for s in samples if s.under_exposed]
    assert max(dark) < 0.3


def test_same_seed_is_byte_identical_and_other_seed_differs(dataset, tmp_path):
    again = render_dataset(tmp_path / "again", seed=0, workers=1, **SMALL)
    other = render_dataset(tmp_path / "other", seed=1, workers=1, **SMALL)
    assert _files(dataset) == _files(again)
    for relative in _files(dataset):
        assert (dataset / relative).read_bytes() == (again / relative).read_bytes(), relative
    rgb_files = [r for r in _files(dataset) if "rgb" in r.parts]
    assert any((dataset / r).read_bytes() != (other / r).read_bytes() for r in rgb_files)


def test_the_val_split_is_held_out_and_leaves_train_and_test_unchanged(dataset, tmp_path):
    fewer_val = render_dataset(tmp_path / "fewer", seed=0, workers=1, **{**SMALL, "n_val": 1})
    assert (dataset / "val.txt").read_text().split() == ["0000", "0001", "0002"]
    for relative in _files(fewer_val):
        if relative.parts[0] in ("train", "test"):
            assert (dataset / relative).read_bytes() == (fewer_val / relative).read_bytes()
    val_rgb = {(dataset / "val" / "rgb" / f"000{i}.png").read_bytes() for i in range(3)}
    train_rgb = {(dataset / "train" / "rgb" / f"000{i}.png").read_bytes() for i in range(3)}
    assert not val_rgb & train_rgb


def test_the_rendered_bundle_validates_on_the_held_out_split(tmp_path):
    from mmanet.data import build_data, data_config

    cached_dataset(tmp_path, **SMALL)  # what build_data reads: the default counts differ
    root = next(tmp_path.iterdir())
    bundle = build_data(data_config("rendered", root=str(root), size=[24, 32]))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 3, 4)
    val_rgb = (root / "val" / "rgb" / "0000.png").read_bytes()
    assert val_rgb != (root / "test" / "rgb" / "0000.png").read_bytes()


def test_cache_is_reused_when_the_record_matches(tmp_path, monkeypatch):
    first = cached_dataset(tmp_path, seed=3, **SMALL)

    def fail(*args, **kwargs):
        raise AssertionError("re-rendered a cached dataset")

    monkeypatch.setattr(render_rgbd, "render_dataset", fail)
    assert cached_dataset(tmp_path, seed=3, **SMALL) == first
    record = json.loads((first / "generator.json").read_text())
    record["version"] = -1
    (first / "generator.json").write_text(json.dumps(record))
    with pytest.raises(AssertionError, match="re-rendered"):
        cached_dataset(tmp_path, seed=3, **SMALL)

"""Each dataset's own settings: held under its name in ``data`` (``data.cefa.protocol``,
``data.nyuv2.size``, ``data.manifest.file``), checked as strictly as any key, read by that
dataset only and recorded in a run's config.yaml; the old flat keys are gone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mmanet.cli import main
from mmanet.config import DataConfig, build_config, to_dict
from mmanet.data import build_data, data_config
from mmanet.data.fixtures import write_cefa
from mmanet.data.seg_fixtures import write_cityscapes
from mmanet.errors import ConfigError
from test_inputs import trained

__all__ = ["trained"]  # a fixture shared with test_inputs.py: a one-epoch manifest run
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("data.protocol=4@5", "data.protocol"),
        ("data.frames_per_video=2", "data.frames_per_video"),
        ("data.image_size=32", "data.image_size"),
        ("data.skip_unreadable=true", "data.skip_unreadable"),
        ("data.size=[24,32]", "data.size"),
        ("data.max_scale=2.0", "data.max_scale"),
        ("data.depth_mode=raw", "data.depth_mode"),
        ("data.missing_files=missing", "data.missing_files"),
        ("data.render_seed=1", "data.render_seed"),
        ("data.cache_dir=somewhere", "data.cache_dir"),
        ("data.label_column=y", "data.label_column"),
        ("data.nonfinite=missing", "data.nonfinite"),
        ("data.manifest=my.csv", "data.manifest"),  # now a mapping: data.manifest.file
    ],
)
def test_an_old_flat_key_is_a_one_line_error_naming_it(override, named):
    with pytest.raises(ConfigError) as err:
        build_config(overrides=[override])
    message = str(err.value)
    assert "\n" not in message
    assert f"'{named}'" in message or f"{named} " in message, message


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["data.name=cefa", "data.cefa.frames_per_video=0"], "data.cefa.frames_per_video must be"),
        (["data.name=cefa", "data.cefa.protocol=4@9"], "data.cefa.protocol must be one of"),
        (["data.casia_surf.image_size=200"], "data.casia_surf.image_size must be >= 1 and <="),
        (["data.cefa.resize=100"], "data.cefa.image_size must be >= 1 and <= data.cefa.resize"),
        (["data.nyuv2.min_scale=2.0"], "data.nyuv2.min_scale must be > 0 and <= data.nyuv2."),
        (["data.cityscapes.size=[512]"], "data.cityscapes.size must be [height, width]"),
        (["data.rendered.depth_std=0"], "data.rendered.depth_std must be > 0"),
        (["data.rendered.render_seed=one"], "'data.rendered.render_seed' must be int"),
        (["data.nyuv2.depth_mode=holes"], "'data.nyuv2.depth_mode' must be one of"),
        (["data.manifest.nonfinite=skip"], "'data.manifest.nonfinite' must be one of"),
        (["data.manifest.split_column=label"], "data.manifest.label_column and data.manifest."),
        (["data.cefa.protocl=4@5"], "unknown config key 'data.cefa.protocl'"),
    ],
)
def test_a_bad_dataset_setting_is_one_line_naming_its_full_key(overrides, named):
    with pytest.raises(ConfigError) as err:
        build_config(overrides=overrides)
    message = str(err.value)
    assert "\n" not in message and named in message, message


def test_only_the_dataset_in_use_records_its_settings():
    recorded = to_dict(build_config(overrides=["data.name=cefa", "data.cefa.protocol=4@2"]))
    assert recorded["data"]["cefa"]["protocol"] == "4@2"
    assert "casia_surf" not in recorded["data"] and "manifest" not in recorded["data"]
    assert not any(isinstance(v, dict) for v in to_dict(build_config())["data"].values())
    # settings not given read as their defaults
    assert DataConfig().cefa == data_config("cefa").cefa and DataConfig().cefa.protocol is None


@pytest.fixture(scope="module")
def cefa_root(tmp_path_factory):
    return write_cefa(tmp_path_factory.mktemp("cefa"), subjects_per_split=2, frames_per_video=1)


def test_cefa_reads_its_own_settings_not_casia_surfs(cefa_root):
    both = data_config(
        "cefa",
        root=str(cefa_root),
        protocol="4@2",
        image_size=20,
        resize=24,
        frames_per_video=1,
        casia_surf={"image_size": 40, "resize": 48},
    )
    bundle = build_data(both)
    assert bundle.input_shapes["ir"] == (3, 20, 20)
    assert bundle.test[0][0]["rgb"].shape == (3, 20, 20)
    # 4@2: the test split is the unseen race EA
    assert {r.paths["rgb"].parents[3].name for r in bundle.test.records} == {"EA"}


def test_a_cefa_run_records_data_cefa_in_its_config_yaml(cefa_root, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--config", str(CONFIGS / "cefa" / "teacher.yaml"), f"out={run}"]
    args += [f"data.root={cefa_root}", "data.cefa.protocol=4@1", "data.cefa.image_size=16"]
    args += ["data.cefa.resize=16", "data.batch_size=4", "data.num_workers=0", "device=cpu"]
    args += ["optim.epochs=1", "optim.warmup_epochs=0", "optim.milestones=[]"]
    args += ["progress=false", "tensorboard=false", "threads=1"]
    assert main(args) == 0
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert recorded["name"] == "cefa"
    assert recorded["cefa"]["protocol"] == "4@1"
    assert (recorded["cefa"]["image_size"], recorded["cefa"]["resize"]) == (16, 16)
    assert "protocol" not in recorded and "image_size" not in recorded


def test_cityscapes_reads_its_own_size_and_statistics(tmp_path):
    root = write_cityscapes(tmp_path / "city", 2, 1, size=(24, 32))
    own = ["data.cityscapes.size=[12,16]", "data.cityscapes.depth_mean=0"]
    own += ["data.cityscapes.depth_std=1"]  # depth in metres as read: 23 m and more here
    config = build_config(CONFIGS / "cityscapes" / "base.yaml", [f"data.root={root}", *own])
    inputs, _ = build_data(config.data).test[0]
    assert inputs["rgb"].shape == (3, 12, 16) and config.data.nyuv2.size == [480, 640]
    assert inputs["depth"].min() > 20  # not the NYUv2 base's statistics (mm) nor ESANet's


def test_nyuv2_reads_its_depth_mode(tmp_path):
    from mmanet.data.seg_fixtures import write_nyuv2

    root = write_nyuv2(tmp_path / "nyuv2", n_train=1, n_test=1, size=(24, 32))
    depths = {}
    for mode in ("refined", "raw"):
        cfg = data_config("nyuv2", root=str(root), size=[24, 32], depth_mode=mode)
        depths[mode] = build_data(cfg).test[0][0]["depth"]
    assert (depths["refined"] != 0).all() and (depths["raw"] == 0).any()


def test_rendered_renders_with_its_own_cache_dir_and_seed(tmp_path, monkeypatch):
    from mmanet.data import render_rgbd

    asked = {}

    def cached_dataset(cache_dir, **kwargs):
        asked.update(cache_dir=cache_dir, **kwargs)
        raise RuntimeError("stop")  # what the loader was asked for is all this test needs

    monkeypatch.setattr(render_rgbd, "cached_dataset", cached_dataset)
    cfg = data_config("rendered", size=[24, 32], cache_dir=str(tmp_path), render_seed=7)
    with pytest.raises(RuntimeError, match="stop"):
        build_data(cfg)
    assert asked == {"cache_dir": str(tmp_path), "size": (24, 32), "seed": 7}


def test_the_manifest_reads_its_own_columns_and_file(tmp_path):
    rows = []
    for i in range(16):
        for view in "xy":
            np.save(tmp_path / f"{view}{i}.npy", np.full(3, float(i), dtype=np.float32))
        rows.append(f"x{i}.npy,y{i}.npy,{i % 2},{('train', 'train', 'val', 'test')[i % 4]}")
    (tmp_path / "m.csv").write_text("x,y,kind,part\n" + "\n".join(rows) + "\n")
    file = str(tmp_path / "m.csv")
    cfg = data_config("manifest", file=file, label_column="kind", split_column="part")
    bundle = build_data(cfg)
    assert bundle.modalities == ["x", "y"] and bundle.class_names == ["0", "1"]
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 4, 4)
    config = build_config(
        CONFIGS / "manifest" / "example.yaml", [f"data.manifest.file={tmp_path / 'm.csv'}"]
    )
    assert config.data.manifest.file == str(tmp_path / "m.csv")


def test_predict_reads_the_runs_data_manifest_nonfinite(trained, tmp_path, monkeypatch):
    """With data.manifest.nonfinite=missing in the run's config, a manifest row's
    non-finite file is a missing modality for predict too."""
    from mmanet import predict

    recorded = predict.checkpoint_config

    def with_missing(path, meta):
        config = recorded(path, meta)
        config.data.manifest.nonfinite = "missing"
        return config

    monkeypatch.setattr(predict, "checkpoint_config", with_missing)
    np.save(tmp_path / "a.npy", np.zeros(4, dtype=np.float32))
    np.save(tmp_path / "b.npy", np.array([np.inf, 0.0, 0.0], dtype=np.float32))
    (tmp_path / "inputs.csv").write_text("a,b\na.npy,b.npy\n")
    assert predict.predict_manifest(trained, tmp_path / "inputs.csv", tmp_path / "p.csv") == 1
    assert (tmp_path / "p.csv").read_text().splitlines()[1].startswith("0,a,")


def test_an_old_flat_key_names_where_it_moved():
    with pytest.raises(ConfigError, match=r"; an entry's setting: data\.cefa\.protocol$"):
        build_config(overrides=["data.protocol=4@5"])
    with pytest.raises(ConfigError, match=r"data\.casia_surf\.image_size, data\.cefa\.image_size$"):
        build_config(overrides=["data.image_size=64"])

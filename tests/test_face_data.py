"""The face anti-spoofing loaders (CASIA-SURF, CeFA) on tiny generated datasets."""

from __future__ import annotations

import filecmp
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mmanet.config import DataConfig
from mmanet.data import DataError, build_data, collate, data_config
from mmanet.data.cefa import PAI_TO_CLASS, load_cefa, parse_video_name
from mmanet.data.face import BONA_FIDE, FACE_MODALITIES
from mmanet.data.fixtures import face_images, write_casia_surf, write_cefa
from mmanet.data.transforms import face_transforms
from mmanet.errors import ConfigError

HALF_RANGE = 127.5 / 128  # |(x - 127.5) / 128| for x in [0, 255]


@pytest.fixture(scope="module")
def casia_root(tmp_path_factory):
    return write_casia_surf(tmp_path_factory.mktemp("casia_surf"), n_per_split=8)


@pytest.fixture(scope="module")
def casia(casia_root):
    return build_data(DataConfig(name="casia_surf", root=str(casia_root)))


@pytest.fixture(scope="module")
def cefa_root(tmp_path_factory):
    return write_cefa(tmp_path_factory.mktemp("cefa"), subjects_per_split=2, frames_per_video=2)


def casia_config(root, **extra) -> DataConfig:
    """data.name=casia_surf; ``extra`` keys of data.casia_surf (skip_unreadable, ...) go there."""
    return data_config("casia_surf", root=str(root), **extra)


def cefa_config(root, protocol="4@1", **extra) -> DataConfig:
    return data_config("cefa", root=str(root), protocol=protocol, **extra)


def list_lines(root: Path, name: str = "train_list.txt") -> list[list[str]]:
    return [line.split() for line in (root / name).read_text().splitlines()]


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- CASIA-SURF -------------------------------------------------------------------------------


def test_casia_surf_splits_shapes_and_labels(casia, casia_root):
    assert (len(casia.train), len(casia.val), len(casia.test)) == (8, 8, 8)
    assert casia.modalities == ["rgb", "depth", "ir"]
    assert casia.input_shapes == {name: (3, 112, 112) for name in FACE_MODALITIES}
    assert casia.class_names[BONA_FIDE] == "bona fide" and casia.class_names == [
        "attack",
        "bona fide",
    ]
    assert casia.skipped == []
    for split, list_name in (
        (casia.train, "train_list.txt"),
        (casia.val, "val_private_list.txt"),
        (casia.test, "test_private_list.txt"),
    ):
        lines = list_lines(casia_root, list_name)
        assert split.labels == [int(fields[3]) for fields in lines]
        assert [r.paths["depth"] for r in split.records] == [casia_root / f[1] for f in lines]
    for dataset in (casia.train, casia.val, casia.train_eval):
        images, label = dataset[1]
        assert label == 0
        assert set(images) == set(FACE_MODALITIES)
        for tensor in images.values():
            assert tensor.shape == (3, 112, 112) and tensor.dtype == torch.float32
            assert tensor.min() >= -HALF_RANGE and tensor.max() <= HALF_RANGE
    # Depth and IR are grey JPEGs: replicated to three equal channels.
    depth = casia.test[0][0]["depth"]
    assert torch.equal(depth[0], depth[1]) and torch.equal(depth[0], depth[2])


def test_casia_surf_subset_of_modalities(casia_root):
    bundle = build_data(casia_config(casia_root, modalities=["ir", "rgb"]))
    assert bundle.modalities == ["ir", "rgb"] and set(bundle.train[0][0]) == {"ir", "rgb"}
    with pytest.raises(DataError, match="unknown CASIA-SURF modality 'thermal'"):
        build_data(casia_config(casia_root, modalities=["rgb", "thermal"]))


def test_train_eval_is_the_training_list_without_augmentation(casia, casia_root):
    assert casia.train_eval.records == casia.train.records
    state = torch.get_rng_state()
    first, again = casia.train_eval[2][0], casia.train_eval[2][0]
    assert torch.equal(torch.get_rng_state(), state)  # no random draw
    assert all(torch.equal(first[name], again[name]) for name in FACE_MODALITIES)
    assert casia.train_eval.transform is casia.test.transform
    augmented = casia.train[2][0]
    assert not torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(augmented["rgb"], first["rgb"])
    # data.augment=false: training samples are the evaluation ones.
    plain = build_data(casia_config(casia_root, augment=False))
    assert torch.equal(plain.train[2][0]["ir"], first["ir"])


def test_one_draw_transforms_all_modalities_alike():
    train, evaluation = face_transforms(FACE_MODALITIES, image_size=32, resize=40, rotation=30)
    rows, cols = np.mgrid[0:50, 0:60]
    asymmetric = np.stack([rows * 5, cols * 4, (rows * cols) % 256], axis=2).astype(np.uint8)
    asymmetric[5:15, 40:55] = 255  # a block off-centre: flips and rotations move it
    plain = evaluation({name: asymmetric.copy() for name in FACE_MODALITIES})
    torch.manual_seed(0)
    for _ in range(8):
        out = train({name: asymmetric.copy() for name in FACE_MODALITIES})
        assert out["rgb"].shape == (3, 32, 32)
        assert torch.equal(out["rgb"], out["depth"]) and torch.equal(out["rgb"], out["ir"])
        assert not torch.equal(out["rgb"], plain["rgb"])


def test_augmentation_is_reproducible_from_the_torch_seed(casia):
    def draw(seed):
        torch.manual_seed(seed)
        return [casia.train[i][0]["depth"] for i in range(4)]

    first, same, other = draw(3), draw(3), draw(4)
    assert all(torch.equal(a, b) for a, b in zip(first, same, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_augmentation_is_reproducible_in_loader_workers(casia):
    def batches(seed):
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(
            casia.train, batch_size=4, shuffle=True, generator=generator,
            num_workers=2, collate_fn=collate,
        )  # fmt: skip
        return [inputs["rgb"] for inputs, _ in loader]

    first, same = batches(5), batches(5)
    assert all(torch.equal(a, b) for a, b in zip(first, same, strict=True))


def test_bona_fide_class_must_be_the_loaders(casia_root):
    assert build_data(casia_config(casia_root, bona_fide_class=1)).class_names[1] == "bona fide"
    with pytest.raises(DataError, match=r"data.bona_fide_class=0, but the bona fide class .* is 1"):
        build_data(casia_config(casia_root, bona_fide_class=0))


# --- CeFA ---------------------------------------------------------------------------------------


def video_fields_of(image: Path) -> tuple[str, tuple[int, ...]]:
    """(race folder, parsed video name) of a CeFA image path."""
    video_dir = image.parents[1]
    return video_dir.parents[1].name, parse_video_name(video_dir.name)


@pytest.mark.parametrize(
    ("protocol", "seen", "unseen"), [("4@1", "AF", "CA"), ("4@2", "AF", "EA"), ("4@5", "EA", "AF")]
)
def test_cefa_protocol_4_splits_by_race_subject_and_attack(cefa_root, protocol, seen, unseen):
    bundle = build_data(cefa_config(cefa_root, protocol))
    expected = {
        "train": (seen, range(0, 200), {1, 4}),
        "val": (seen, range(200, 300), {1, 4}),
        "test": (unseen, range(300, 500), {1, 2}),
    }
    for split, (race, subjects, pais) in expected.items():
        dataset = bundle.split(split)
        assert len(dataset) == 2 * 2 * 2  # subjects x (real, one attack) x frames
        seen_pais = set()
        for record, label in zip(dataset.records, dataset.labels, strict=True):
            record_race, (subject, device, session, pai) = video_fields_of(record.paths["rgb"])
            assert record_race == race and subject in subjects and device == 1
            assert session in (1, 2)
            assert label == (1 if pai == 1 else 0) == PAI_TO_CLASS[pai]
            seen_pais.add(pai)
            # The three images of a frame: same video, same frame file name.
            frames = {(p.parents[1], p.name) for p in record.paths.values()}
            assert len(frames) == 1
            assert [p.parent.name for p in record.paths.values()] == ["profile", "depth", "ir"]
        assert seen_pais == pais
    images, label = bundle.test[0]
    assert {name: t.shape for name, t in images.items()} == dict.fromkeys(
        FACE_MODALITIES, (3, 112, 112)
    )
    assert bundle.class_names == ["attack", "bona fide"]


def test_cefa_protocol_errors_name_the_protocol(cefa_root, tmp_path):
    with pytest.raises(ConfigError, match=r"data\.cefa\.protocol must be one of .*'4@9'") as info:
        cefa_config(cefa_root, "4@9")
    assert "'4@1'" in one_line_error(info)
    with pytest.raises(DataError, match=r"unknown CeFA protocol data\.cefa\.protocol='4@9'"):
        load_cefa(cefa_root, "4@9")
    with pytest.raises(DataError, match=r"unknown CeFA protocol data\.cefa\.protocol=None"):
        build_data(cefa_config(cefa_root, None))
    (tmp_path / "AF").mkdir()
    with pytest.raises(
        DataError, match=r"CeFA race folder not found: .*CA \(protocol 4@1 uses CA\)"
    ):
        build_data(cefa_config(tmp_path, "4@1"))


def test_cefa_missing_frame_fails_or_is_skipped(tmp_path):
    root = write_cefa(tmp_path, subjects_per_split=1, frames_per_video=2)
    missing = root / "AF" / "AF-000" / "1_000_1_1_4" / "depth" / "0002.jpg"
    missing.unlink()
    with pytest.raises(DataError, match=r"CeFA protocol 4@1 \(train\): image not found: ") as info:
        build_data(cefa_config(root))
    assert str(missing) in one_line_error(info)
    bundle = build_data(cefa_config(root, skip_unreadable=True))
    assert len(bundle.train) == 3 and bundle.skipped == [f"{missing}: file not found"]


def test_cefa_frames_per_video_and_cross_pai_protocol(cefa_root):
    one_frame = load_cefa(cefa_root, "4@1", frames_per_video=1, augment=False)
    assert len(one_frame.train) == 2 * 2
    assert {r.paths["ir"].name for r in one_frame.train.records} == {"0001.jpg"}
    cross_pai = load_cefa(cefa_root, "2@1", modalities=["depth"])
    races = {video_fields_of(r.paths["depth"])[0] for r in cross_pai.train.records}
    assert races == {"AF", "CA", "EA"}
    assert {video_fields_of(r.paths["depth"])[1][3] for r in cross_pai.test.records} == {1, 4}


def test_cefa_video_without_frames_fails_or_is_skipped(tmp_path):
    root = write_cefa(tmp_path, subjects_per_split=1, frames_per_video=1)
    profile = root / "CA" / "CA-300" / "2_300_1_1_2" / "profile"
    (profile / "0001.jpg").unlink()
    with pytest.raises(DataError, match=r"CeFA protocol 4@1 \(test\): .*profile: no frames"):
        build_data(cefa_config(root))
    bundle = build_data(cefa_config(root, skip_unreadable=True))
    assert len(bundle.test) == 1 and bundle.skipped == [f"{profile}: no frames"]


# --- bad input ----------------------------------------------------------------------------------


@pytest.fixture
def small_casia(tmp_path):
    return write_casia_surf(tmp_path, n_per_split=4, size=16)


def rewrite_line(root: Path, number: int, fields: list[str], name="train_list.txt") -> None:
    lines = (root / name).read_text().splitlines()
    lines[number - 1] = " ".join(fields)
    (root / name).write_text("\n".join(lines) + "\n")


def test_list_line_with_wrong_field_count(small_casia):
    rewrite_line(small_casia, 2, list_lines(small_casia)[1][:3])
    with pytest.raises(DataError) as excinfo:
        build_data(casia_config(small_casia))
    message = one_line_error(excinfo)
    assert f"{small_casia / 'train_list.txt'}, line 2: expected 4 fields" in message
    assert "got 3" in message


def test_label_outside_0_1(small_casia):
    rewrite_line(small_casia, 3, [*list_lines(small_casia)[2][:3], "2"])
    with pytest.raises(DataError) as excinfo:
        build_data(casia_config(small_casia))
    assert "train_list.txt, line 3: label '2' is not 0 (attack) or 1 (bona fide)" in one_line_error(
        excinfo
    )


def test_missing_list_file_and_root(small_casia):
    (small_casia / "val_private_list.txt").unlink()
    with pytest.raises(DataError, match=r"CASIA-SURF list file not found: .*val_private_list\.txt"):
        build_data(casia_config(small_casia))
    with pytest.raises(DataError, match=r"data\.name=casia_surf needs data\.root"):
        build_data(DataConfig(name="casia_surf"))


def test_missing_image_fails_when_built(small_casia):
    missing = small_casia / list_lines(small_casia, "test_private_list.txt")[1][2]
    missing.unlink()
    with pytest.raises(DataError) as excinfo:
        build_data(casia_config(small_casia))
    assert f"test_private_list.txt, line 2: image not found: {missing}" in one_line_error(excinfo)


def write_bad_image(path: Path, kind: str) -> None:
    if kind == "garbage":
        path.write_bytes(b"not a jpeg at all")
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:  # 2 (grey + alpha) or 4 (RGBA) channels, PNG bytes under the .jpg name
        mode = {"2 channels": "LA", "4 channels": "RGBA"}[kind]
        Image.new(mode, (16, 16)).save(path, format="PNG")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("garbage", "not an image file that can be decoded"),
        ("truncated", r"cannot be decoded \(.*[Tt]runcated"),
        ("2 channels", r"has 2 channels \(LA\); expected 1 \(grey\) or 3 \(colour\)"),
        ("4 channels", r"has 4 channels \(RGBA\); expected 1 \(grey\) or 3 \(colour\)"),
    ],
)
def test_unusable_image_fails_when_loaded(small_casia, kind, reason):
    bad = small_casia / list_lines(small_casia)[2][1]
    write_bad_image(bad, kind)
    bundle = build_data(casia_config(small_casia))  # existence is all that is checked here
    bundle.train[0]
    with pytest.raises(DataError) as excinfo:
        bundle.train[2]
    message = one_line_error(excinfo)
    assert message.startswith(f"{small_casia / 'train_list.txt'}, line 3: image {bad}: ")
    assert re.search(reason, message)


def test_skip_unreadable_drops_and_records_bad_samples(small_casia):
    train, val = list_lines(small_casia), list_lines(small_casia, "val_private_list.txt")
    garbage, rgba, missing = (
        small_casia / train[0][0],
        small_casia / train[3][2],
        small_casia / val[1][1],
    )
    write_bad_image(garbage, "garbage")
    write_bad_image(rgba, "4 channels")
    missing.unlink()
    bundle = build_data(casia_config(small_casia, skip_unreadable=True))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (2, 3, 4)
    assert bundle.skipped == [
        f"{garbage}: not an image file that can be decoded",
        f"{rgba}: has 4 channels (RGBA); expected 1 (grey) or 3 (colour)",
        f"{missing}: file not found",
    ]
    assert len(bundle.train_eval) == 2
    assert [r.origin.rsplit(" ", 1)[1] for r in bundle.train.records] == ["2", "3"]


# --- fixtures -----------------------------------------------------------------------------------


def test_fixtures_are_deterministic_per_seed(tmp_path):
    first = write_casia_surf(tmp_path / "a", n_per_split=2, size=16, seed=7)
    same = write_casia_surf(tmp_path / "b", n_per_split=2, size=16, seed=7)
    other = write_casia_surf(tmp_path / "c", n_per_split=2, size=16, seed=8)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 3 + 3 * 2 * 3
    _, mismatch, errors = filecmp.cmpfiles(first, same, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
    _, mismatch, _ = filecmp.cmpfiles(first, other, [str(f) for f in files], shallow=False)
    assert len(mismatch) == 3 * 2 * 3  # every image differs, the list files do not


def test_fixture_classes_differ_visibly():
    rng = np.random.default_rng(0)

    def stripe_energy(bona_fide: bool) -> float:
        rgb = face_images(rng, 48, bona_fide)["rgb"].astype(float)
        return float(np.abs(np.diff(rgb, axis=1)).mean())

    assert max(stripe_energy(True) for _ in range(5)) < min(stripe_energy(False) for _ in range(5))


def test_make_fixtures_script(tmp_path, monkeypatch):
    script = Path(__file__).parents[1] / "scripts" / "make_fixtures.py"
    monkeypatch.setattr(sys, "argv", [str(script), "cefa", str(tmp_path / "cefa")])
    runpy.run_path(str(script), run_name="__main__")
    assert (tmp_path / "cefa" / "EA" / "EA-301" / "3_301_1_2_4" / "ir" / "0001.jpg").is_file()

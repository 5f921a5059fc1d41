"""The public datasets read from the packages of ``mmanet[studies]`` (data/public.py): sizes and
classes as the packages document them, views cut where they should be, statistics from the
training split alone, seeded splits, and a short training run on each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mmanet
from conftest import evaluation
from mmanet.cli import main
from mmanet.config import DataConfig
from mmanet.data import build_data, public
from mmanet.errors import DataError

sklearn_datasets = pytest.importorskip("sklearn.datasets", reason="needs mmanet[studies]")

try:
    public.vowels_folder()
    VOWELS = pytest.param("japanese_vowels")
except DataError:
    VOWELS = pytest.param("japanese_vowels", marks=pytest.mark.skip("needs sktime (studies)"))

CONFIGS = Path(mmanet.__file__).parent / "configs" / "public"

# Hand-checked against the packages' documentation: scikit-learn's descr/*.rst (569 = 212
# malignant + 357 benign; 1797 digits of 10 classes) and the UCI page quoted in the .ts header
# (9 speakers, 30 training utterances each; 370 test utterances, 24 to 88 a speaker).
# Splits: per class round(60 %) / round(15 %) / rest; Japanese Vowels: 24 / 6 of each
# speaker's 30 training utterances, the package's test file as test.
EXPECTED = {
    "breast_cancer": {
        "shapes": {"mean": (10,), "error": (10,), "worst": (10,)},
        "sizes": (341, 86, 142),  # malignant 127/32/53, benign 214/54/89
        "counts": [212, 357],
    },
    "digits_views": {
        "shapes": {v: (1, 4, 4) for v in ("top_left", "top_right", "bottom_left", "bottom_right")},
        "sizes": (1078, 269, 450),
        "counts": [178, 182, 177, 183, 181, 182, 181, 179, 174, 180],
    },
    "japanese_vowels": {
        "shapes": {"cep_low": (4, 29), "cep_mid": (4, 29), "cep_high": (4, 29)},
        "sizes": (216, 54, 370),
        "counts": [30 + n for n in (31, 35, 88, 44, 29, 24, 40, 50, 29)],
    },
}
DATASETS = [pytest.param("breast_cancer"), pytest.param("digits_views"), VOWELS]
SOURCES = {  # the raw views, labels and split indices
    "breast_cancer": public.breast_cancer_source,
    "digits_views": public.digits_source,
    "japanese_vowels": public.vowels_source,
}
LOADERS = {  # the standardised bundles
    "breast_cancer": public.load_breast_cancer,
    "digits_views": public.load_digits_views,
    "japanese_vowels": public.load_vowels,
}


def labels(dataset) -> np.ndarray:
    return dataset.labels.numpy()


@pytest.fixture(scope="module")
def bundles():
    cache: dict = {}

    def get(name: str, seed: int = 0):
        if (name, seed) not in cache:
            cache[name, seed] = build_data(DataConfig(name=name, split_seed=seed))
        return cache[name, seed]

    return get


@pytest.mark.parametrize("name", DATASETS)
def test_shapes_sizes_and_classes_are_the_documented_ones(bundles, name):
    bundle, expected = bundles(name), EXPECTED[name]
    assert bundle.input_shapes == expected["shapes"]
    assert list(bundle.modalities) == list(expected["shapes"])
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == expected["sizes"]
    every = np.concatenate([labels(bundle.split(s)) for s in ("train", "val", "test")])
    assert np.bincount(every).tolist() == expected["counts"]
    assert bundle.num_classes == len(expected["counts"])
    inputs, _ = bundle.train[0]
    assert {k: tuple(v.shape) for k, v in inputs.items()} == expected["shapes"]


def test_breast_cancer_views_are_the_three_summaries():
    bunch = sklearn_datasets.load_breast_cancer()
    source = public.breast_cancer_source()
    assert np.array_equal(source.views["mean"], bunch.data[:, :10])
    assert np.array_equal(source.views["error"], bunch.data[:, 10:20])
    assert np.array_equal(source.views["worst"], bunch.data[:, 20:])
    # the worst value (mean of the three largest) is never below the mean of all nuclei
    assert (source.views["worst"] >= source.views["mean"]).all()
    assert source.class_names == ["malignant", "benign"]


def test_digit_quadrants_tile_the_image():
    images = sklearn_datasets.load_digits().images
    views = public.digits_source().views
    top = np.concatenate([views["top_left"], views["top_right"]], axis=3)
    bottom = np.concatenate([views["bottom_left"], views["bottom_right"]], axis=3)
    assert np.array_equal(np.concatenate([top, bottom], axis=2)[:, 0], images)


@pytest.mark.parametrize("name", [VOWELS])
def test_vowel_bands_hold_the_file_values(name):
    source = public.vowels_source()
    series = np.concatenate([source.views[v] for v in public.VOWEL_VIEWS], axis=1)
    # the first utterance of JapaneseVowels_TRAIN.ts: the first two frames of each of its
    # 12 coefficients, as the file's first data line reads them
    first = [
        [1.860936, 1.891651], [-0.207383, -0.193249], [0.261557, 0.235363],
        [-0.214562, -0.249118], [-0.171253, -0.11289], [-0.118167, -0.112238],
        [-0.277557, -0.311997], [0.025668, -0.027122], [0.126701, 0.171457],
        [-0.306756, -0.289431], [-0.213076, -0.247722], [0.088728, 0.093011],
    ]  # fmt: skip
    assert series[0, :, :2].tolist() == first
    assert source.views["cep_mid"][0, :, 0].tolist() == [r[0] for r in first[4:8]]
    lengths = (~np.isnan(series[:, 0])).sum(axis=1)
    assert lengths.min() == 7 and lengths.max() == 29  # as documented: 7 to 29 frames
    assert (np.isnan(series).any(axis=1) == np.isnan(series).all(axis=1)).all()


@pytest.mark.parametrize("name", DATASETS)
def test_standardised_with_training_statistics_only(name):
    source, bundle = SOURCES[name](), LOADERS[name]()
    train, val, test = source.splits
    for view in bundle.modalities:
        raw = source.views[view]
        got = {s: bundle.split(s).views[view].numpy() for s in ("train", "val", "test")}
        if name == "digits_views":  # one pixel mean and std over the four quadrants
            whole = np.concatenate([source.views[v][train] for v in bundle.modalities], axis=1)
            mean, std = whole.mean(), whole.std()
        elif name == "japanese_vowels":  # per coefficient over the training frames
            mean = np.nanmean(raw[train], axis=(0, 2), keepdims=True)[0]
            std = np.nanstd(raw[train], axis=(0, 2), keepdims=True)[0]
        else:  # per feature
            mean, std = raw[train].mean(axis=0), raw[train].std(axis=0)
        for split, indices in (("train", train), ("val", val), ("test", test)):
            expected = np.nan_to_num((raw[indices] - mean) / std, nan=0.0)
            np.testing.assert_allclose(got[split], expected, rtol=1e-5, atol=1e-5)
    if name == "breast_cancer":  # each training feature has mean 0 and std 1; val does not
        x = bundle.train.views["mean"].double().numpy()
        np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-6)
        np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-5)
        assert np.abs(bundle.val.views["mean"].numpy().mean(axis=0)).max() > 1e-3


@pytest.mark.parametrize("name", DATASETS)
def test_splits_are_seeded_disjoint_and_val_comes_from_train(bundles, name):
    source = SOURCES[name]
    train, val, test = source(0).splits
    assert source(0).splits == (train, val, test)  # the same seed, the same split
    assert source(1).splits != (train, val, test)
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert len(train) + len(val) + len(test) == sum(EXPECTED[name]["counts"])
    if name == "japanese_vowels":  # the package's own test file; val from its train file
        assert test == list(range(270, 640))
        assert max(train + val) < 270
        assert np.bincount(source(0).labels[val]).tolist() == [6] * 9
    a, b = bundles(name), bundles(name, 1)
    view = a.modalities[0]
    assert not np.array_equal(a.val.views[view].numpy(), b.val.views[view].numpy())


def test_unknown_view_and_missing_package_are_one_line_errors(monkeypatch):
    with pytest.raises(DataError, match="unknown breast_cancer view 'size'"):
        build_data(DataConfig(name="breast_cancer", modalities=["mean", "size"]))
    subset = build_data(DataConfig(name="digits_views", modalities=["bottom_right", "top_left"]))
    assert subset.modalities == ["bottom_right", "top_left"]
    monkeypatch.setattr(public, "VOWEL_PACKAGES", ("no_such_package_here",))
    with pytest.raises(DataError, match=r"mmanet\[studies\]"):
        public.vowels_source()


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASETS)
def test_a_short_training_run_beats_chance_on_val(tmp_path, name):
    run = tmp_path / name
    args = ["train", "--config", str(CONFIGS / f"{name}.yaml"), f"out={run}"]
    short = ["optim.epochs=6", "method.mar.warmup_epochs=2", "progress=false"]
    assert main([*args, *short, "tensorboard=false", "threads=1"]) == 0
    assert main(["evaluate", "--run", str(run), "--split", "val"]) == 0
    report = evaluation(run, "val")
    full = "+".join(EXPECTED[name]["shapes"])
    counts = EXPECTED[name]["counts"]
    chance = 100 * max(counts) / sum(counts)  # always answering the commonest class
    assert report["combinations"][full]["accuracy"] > chance + 10

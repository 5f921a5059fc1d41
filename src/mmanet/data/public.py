"""Public datasets read offline from the Python packages that ship them (``mmanet[studies]``).

Three kinds, each a registered ``data.name`` (docs/datasets.md):

* ``breast_cancer`` (tabular): scikit-learn's copy of the Wisconsin Diagnostic Breast Cancer
  data, 569 tumours (212 malignant, 357 benign). Ten measurements of the cell nuclei in a
  fine-needle aspirate image are each summarised three ways over the nuclei; each summary is
  a view of 10 features: ``mean``, ``error`` (standard error) and ``worst`` (mean of the
  three largest values).
* ``digits_views`` (image): scikit-learn's 1797 handwritten digits, 8 x 8 pixels of 0..16.
  The views are the image's four 4 x 4 quadrants, each a (1, 4, 4) image: a construction
  (one sensor, four regions, as in occlusion studies), not four sensors.
* ``japanese_vowels`` (multivariate time series): sktime's copy of the UCI Japanese Vowels
  data, utterances of 9 speakers as 12 LPC cepstrum coefficients over 7 to 29 frames. The
  views are three bands of coefficients, 1-4, 5-8 and 9-12 (the spectral envelope's coarse
  to fine detail), each (4, 29): a construction too, zero-padded after standardisation.

Splits: the package's own train / test where it has one (Japanese Vowels), with a seeded
stratified 20 % of train as validation; else a seeded stratified 60 / 15 / 25 % split, as for
the bundled Multiple Features. ``data.split_seed`` seeds both. Every statistic used to
standardise is taken from the training split alone.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, TensorMultimodalDataset, stratified_split
from mmanet.registry import DATASETS

FRACTIONS = (0.60, 0.15, 0.25)  # without a published split: as the bundled mfeat
VAL_FRACTION = 0.20  # with a published train / test split: this share of train validates
INSTALL = "pip install 'mmanet[studies]'"

BREAST_CANCER_VIEWS = {"mean": slice(0, 10), "error": slice(10, 20), "worst": slice(20, 30)}
DIGITS_VIEWS = {
    "top_left": (slice(0, 4), slice(0, 4)),
    "top_right": (slice(0, 4), slice(4, 8)),
    "bottom_left": (slice(4, 8), slice(0, 4)),
    "bottom_right": (slice(4, 8), slice(4, 8)),
}
VOWEL_VIEWS = {"cep_low": slice(0, 4), "cep_mid": slice(4, 8), "cep_high": slice(8, 12)}
VOWEL_FRAMES = 29  # the longest utterance of the published data (train and test)
VOWEL_PACKAGES = ("sktime", "aeon")  # both ship datasets/data/JapaneseVowels/*.ts


@dataclass
class Source:
    """A dataset as the package ships it: raw views (unstandardised), labels, and the
    indices of its train / val / test splits."""

    views: dict[str, np.ndarray]
    labels: np.ndarray
    splits: tuple[list[int], list[int], list[int]]
    class_names: list[str]


def require(module: str, dataset: str) -> ModuleType:
    """Import ``module``; its absence is a one-line DataError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"data.name={dataset} reads its data from {module}: {INSTALL}") from None


def pick(views: Mapping[str, object], chosen: Sequence[str] | None, dataset: str) -> list[str]:
    """``chosen`` (data.modalities) checked against the dataset's views; None: all of them."""
    names = list(chosen) if chosen is not None else list(views)
    unknown = [n for n in names if n not in views]
    if unknown:
        raise DataError(f"unknown {dataset} view {unknown[0]!r}; views: {', '.join(views)}")
    return names


def breast_cancer_source(split_seed: int = 0) -> Source:
    """scikit-learn's breast cancer table as three views of its 30 columns."""
    datasets = require("sklearn.datasets", "breast_cancer")
    bunch = datasets.load_breast_cancer()
    names = [str(n) for n in bunch.feature_names]
    # the columns are 10 means, 10 standard errors, 10 worst values of the same measurements
    for view, columns in BREAST_CANCER_VIEWS.items():
        measured = [n.removeprefix("mean ").removeprefix("worst ") for n in names[columns]]
        measured = [n.removesuffix(" error") for n in measured]
        if measured != [n.removeprefix("mean ") for n in names[:10]]:
            raise DataError(f"breast_cancer: the {view} columns are not where expected: {names}")
    labels = np.asarray(bunch.target, dtype=np.int64)
    return Source(
        views={v: np.asarray(bunch.data[:, c], np.float64) for v, c in BREAST_CANCER_VIEWS.items()},
        labels=labels,
        splits=stratified_split(labels.tolist(), FRACTIONS, split_seed),
        class_names=[str(n) for n in bunch.target_names],
    )


def digits_source(split_seed: int = 0) -> Source:
    """scikit-learn's 8 x 8 digits as four (1, 4, 4) quadrant views."""
    datasets = require("sklearn.datasets", "digits_views")
    bunch = datasets.load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)  # (n, 8, 8), values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    return Source(
        views={v: images[:, None, rows, cols] for v, (rows, cols) in DIGITS_VIEWS.items()},
        labels=labels,
        splits=stratified_split(labels.tolist(), FRACTIONS, split_seed),
        class_names=[str(c) for c in range(10)],
    )


def vowels_folder() -> Path:
    """The JapaneseVowels folder of the first installed package of VOWEL_PACKAGES, found
    without importing the package."""
    for package in VOWEL_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        folder = Path(spec.origin).parent / "datasets" / "data" / "JapaneseVowels"
        if (folder / "JapaneseVowels_TRAIN.ts").is_file():
            return folder
    raise DataError(f"data.name=japanese_vowels reads its data from sktime: {INSTALL}")


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """A multivariate ``.ts`` file (sktime's format): per series a (dims, length) array, and
    its class label. Each data line is ``dim1:dim2:...:label``, a dim comma-separated."""
    series: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        try:
            series.append(np.array([[float(v) for v in d.split(",")] for d in dims]))
        except ValueError as err:
            raise DataError(f"cannot parse {path}: line {number}: {err}") from None
        labels.append(label.strip())
    return series, labels


def pad(series: Sequence[np.ndarray], length: int) -> np.ndarray:
    """(n, dims, length): each (dims, t) series followed by NaN (no frame there)."""
    out = np.full((len(series), series[0].shape[0], length), np.nan)
    for i, s in enumerate(series):
        if s.shape[1] > length:
            raise DataError(f"a series of {s.shape[1]} frames is longer than {length}")
        out[i, :, : s.shape[1]] = s
    return out


def vowels_source(split_seed: int = 0) -> Source:
    """Japanese Vowels: the package's train file (split into train / val) and test file; each
    view (n, 4, 29) holds NaN after an utterance's last frame."""
    folder = vowels_folder()
    train, train_labels = read_ts(folder / "JapaneseVowels_TRAIN.ts")
    test, test_labels = read_ts(folder / "JapaneseVowels_TEST.ts")
    classes = sorted(set(train_labels), key=int)
    labels = np.array([classes.index(c) for c in train_labels + test_labels], dtype=np.int64)
    fit, val, _ = stratified_split(
        labels[: len(train)].tolist(), (1 - VAL_FRACTION, VAL_FRACTION, 0.0), split_seed
    )
    series = pad(train + test, VOWEL_FRAMES)  # (n, 12, 29)
    return Source(
        views={v: series[:, bands] for v, bands in VOWEL_VIEWS.items()},
        labels=labels,
        splits=(fit, val, list(range(len(train), len(labels)))),
        class_names=classes,
    )


def standardise(x: np.ndarray, train: list[int], axes: tuple[int, ...]) -> np.ndarray:
    """``x`` less the training rows' mean, over the training rows' standard deviation; the
    statistics are taken over the sample axis and ``axes``, skipping NaN (no value there:
    NaN becomes 0, the training mean). A constant feature is only centred."""
    over = (0, *axes)
    mean = np.nanmean(x[train], axis=over, keepdims=True)
    std = np.nanstd(x[train], axis=over, keepdims=True)
    return np.nan_to_num((x - mean) / np.where(std > 1e-8, std, 1.0), nan=0.0)


def bundle(source: Source, views: dict[str, np.ndarray], modalities: list[str]) -> DataBundle:
    """The splits of ``source`` holding the (already standardised) ``views``."""

    def subset(indices: list[int]) -> TensorMultimodalDataset:
        return TensorMultimodalDataset(
            {v: torch.from_numpy(views[v][indices]).float() for v in modalities},
            torch.from_numpy(source.labels[indices]),
        )

    train, val, test = source.splits
    return DataBundle(
        train=subset(train),
        val=subset(val),
        test=subset(test),
        modalities=modalities,
        input_shapes={v: tuple(views[v].shape[1:]) for v in modalities},
        class_names=source.class_names,
    )


def load_breast_cancer(modalities: list[str] | None = None, split_seed: int = 0) -> DataBundle:
    """Three 10-feature views, each feature standardised with the training split's stats."""
    chosen = pick(BREAST_CANCER_VIEWS, modalities, "breast_cancer")
    source = breast_cancer_source(split_seed)
    train = source.splits[0]
    views = {v: standardise(source.views[v], train, ()) for v in chosen}
    return bundle(source, views, chosen)


def load_digits_views(modalities: list[str] | None = None, split_seed: int = 0) -> DataBundle:
    """Four (1, 4, 4) quadrants, standardised by one pixel mean and standard deviation of
    the training images (the views keep one scale, as pixels of one image)."""
    chosen = pick(DIGITS_VIEWS, modalities, "digits_views")
    source = digits_source(split_seed)
    image = np.concatenate([source.views[v] for v in DIGITS_VIEWS], axis=1)  # (n, 4, 4, 4)
    scaled = standardise(image, source.splits[0], (1, 2, 3))
    views = {v: scaled[:, i : i + 1] for i, v in enumerate(DIGITS_VIEWS)}
    return bundle(source, {v: views[v] for v in chosen}, chosen)


def load_vowels(modalities: list[str] | None = None, split_seed: int = 0) -> DataBundle:
    """Three (4, 29) bands of coefficients; each coefficient standardised with the mean and
    standard deviation over every frame of the training utterances, then zero-padded."""
    chosen = pick(VOWEL_VIEWS, modalities, "japanese_vowels")
    source = vowels_source(split_seed)
    train = source.splits[0]
    views = {v: standardise(source.views[v], train, (2,)) for v in chosen}
    return bundle(source, views, chosen)


@DATASETS.register("breast_cancer")
def build_breast_cancer(cfg: DataConfig) -> DataBundle:
    """``data.name=breast_cancer`` (inputs are read as arrays, as given)."""
    return load_breast_cancer(cfg.modalities, cfg.split_seed)


@DATASETS.register("digits_views")
def build_digits_views(cfg: DataConfig) -> DataBundle:
    """``data.name=digits_views`` (inputs are read as arrays, as given)."""
    return load_digits_views(cfg.modalities, cfg.split_seed)


@DATASETS.register("japanese_vowels")
def build_japanese_vowels(cfg: DataConfig) -> DataBundle:
    """``data.name=japanese_vowels`` (inputs are read as arrays, as given)."""
    return load_vowels(cfg.modalities, cfg.split_seed)

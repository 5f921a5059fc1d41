"""The RGB-D segmentation loaders (NYUv2, Cityscapes), segmentation metrics and panels."""

from __future__ import annotations

import math
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mmanet.data import DataError, collate
from mmanet.data.cityscapes import (
    BASELINE_M,
    CITYSCAPES_CLASS_NAMES,
    FOCAL_PX,
    depth_from_disparity,
    load_cityscapes,
)
from mmanet.data.nyuv2 import NYUV2_CLASS_NAMES, NYUV2_DEPTH_MEAN, NYUV2_DEPTH_STD, load_nyuv2
from mmanet.data.rgbd import IGNORE_INDEX, median_frequency_weights
from mmanet.data.seg_fixtures import write_cityscapes, write_nyuv2
from mmanet.metrics import iou_metrics
from mmanet.segmentation_images import colorize, default_palette, save_prediction_panel
from mmanet.tasks.segmentation import SegmentationTask

SIZE = (24, 32)


@pytest.fixture(scope="module")
def nyuv2_root(tmp_path_factory):
    return write_nyuv2(tmp_path_factory.mktemp("nyuv2"), n_train=3, n_test=2, size=SIZE)


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    return write_cityscapes(tmp_path_factory.mktemp("cityscapes"), 2, 2, 1, size=SIZE)


@pytest.fixture
def nyuv2_copy(nyuv2_root, tmp_path):
    return shutil.copytree(nyuv2_root, tmp_path / "nyuv2")


def stored_labels(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def nyuv2_depth_mm(depth: torch.Tensor) -> torch.Tensor:
    return depth * NYUV2_DEPTH_STD + NYUV2_DEPTH_MEAN


def test_iou_by_hand():
    labels = torch.tensor([[0, 0, 1], [1, IGNORE_INDEX, IGNORE_INDEX]])
    predictions = torch.tensor([[0, 1, 1], [1, 2, 0]])  # the class-2 pixel is ignored
    task = SegmentationTask(["a", "b", "c"], ignore_index=IGNORE_INDEX)
    confusion = task.confusion(predictions, labels)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    metrics = iou_metrics(confusion)
    iou_0, iou_1 = 100 * 1 / 2, 100 * 2 / 3  # TP / (TP + FP + FN)
    assert metrics["per_class_iou"][:2] == pytest.approx([iou_0, iou_1])
    assert math.isnan(metrics["per_class_iou"][2])  # absent from both: left out of the mean
    assert metrics["miou"] == pytest.approx((iou_0 + iou_1) / 2)
    assert metrics["pixel_accuracy"] == pytest.approx(75.0)


def test_iou_class_only_predicted_counts_as_zero():
    task = SegmentationTask(["a", "b"], ignore_index=IGNORE_INDEX)
    confusion = task.confusion(torch.tensor([0, 1]), torch.tensor([0, 0]))
    metrics = iou_metrics(confusion)
    assert metrics["per_class_iou"] == pytest.approx([50.0, 0.0])
    assert metrics["miou"] == pytest.approx(25.0)


def test_nyuv2_evaluation_samples(nyuv2_root):
    bundle = load_nyuv2(nyuv2_root, size=SIZE)
    assert bundle.class_names == NYUV2_CLASS_NAMES and bundle.num_classes == 40
    assert bundle.input_shapes == {"rgb": (3, *SIZE), "depth": (1, *SIZE)}
    assert len(bundle.train) == 3 and len(bundle.test) == 2
    assert bundle.val.records == bundle.test.records  # NYUv2: val is the test split
    inputs, label = bundle.test[0]
    assert inputs["rgb"].shape == (3, *SIZE) and inputs["depth"].shape == (1, *SIZE)
    assert label.shape == SIZE and label.dtype == torch.long
    raw = stored_labels(nyuv2_root / "test" / "labels_40" / "0004.png").astype(np.int64)
    expected = np.where(raw == 0, IGNORE_INDEX, raw - 1)
    assert (raw == 0).any() and np.array_equal(label.numpy(), expected)
    depth_mm = cv2.imread(str(nyuv2_root / "test" / "depth" / "0004.png"), cv2.IMREAD_UNCHANGED)
    assert torch.allclose(nyuv2_depth_mm(inputs["depth"][0]), torch.from_numpy(depth_mm).float())
    rgb = np.asarray(Image.open(nyuv2_root / "test" / "rgb" / "0004.png"), dtype=np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected_rgb = ((rgb / 255 - mean) / std).transpose(2, 0, 1)
    assert np.allclose(inputs["rgb"].numpy(), expected_rgb, atol=1e-5)


def test_nyuv2_raw_depth_keeps_holes_at_zero(nyuv2_root):
    inputs, _ = load_nyuv2(nyuv2_root, size=SIZE, depth_mode="raw").test[0]
    raw = cv2.imread(str(nyuv2_root / "test" / "depth_raw" / "0004.png"), cv2.IMREAD_UNCHANGED)
    assert (raw == 0).any() and (inputs["depth"][0].numpy()[raw == 0] == 0).all()


def test_nyuv2_augmentation_keeps_rgb_depth_label_aligned(nyuv2_root):
    bundle = load_nyuv2(nyuv2_root, size=(16, 20))
    torch.manual_seed(0)
    changed = False
    for _ in range(4):
        for index in range(len(bundle.train)):
            inputs, label = bundle.train[index]
            assert inputs["rgb"].shape == (3, 16, 20) and label.shape == (16, 20)
            # the fixture's depth is 1000 + 50 x stored label (0 = void)
            stored = torch.where(label == IGNORE_INDEX, 0, label + 1)
            expected_mm = (1000 + 50 * stored).float()
            assert torch.allclose(nyuv2_depth_mm(inputs["depth"][0]), expected_mm, atol=0.05)
            changed |= not torch.equal(label, bundle.train_eval[index][1])
    assert changed  # the augmentation did move pixels


def test_nyuv2_augmentation_is_reproducible(nyuv2_root):
    bundle = load_nyuv2(nyuv2_root, size=(16, 20))
    torch.manual_seed(3)
    first = bundle.train[0]
    torch.manual_seed(3)
    second = bundle.train[0]
    assert torch.equal(first[1], second[1]) and torch.equal(first[0]["rgb"], second[0]["rgb"])


def test_collate_stacks_label_maps(nyuv2_root):
    bundle = load_nyuv2(nyuv2_root, ["depth"], size=SIZE, augment=False)
    inputs, labels = next(iter(DataLoader(bundle.train, batch_size=3, collate_fn=collate)))
    assert list(inputs) == ["depth"] and inputs["depth"].shape == (3, 1, *SIZE)
    assert labels.shape == (3, *SIZE) and labels.dtype == torch.long
    assert collate([({"x": torch.zeros(2)}, 1)])[1].tolist() == [1]  # class labels still work


def test_depth_from_disparity_by_hand():
    pixels = np.array([[0, 1, 513, 1025, 257]], dtype=np.uint16)
    # p = 0: invalid; p = 1: d = 0; d = 2, 4 px; p = 257: d = 1 px -> 473.6 m > 300 m: invalid
    expected = [0.0, 0.0, 0.209313 * 2262.52 / 2, 0.209313 * 2262.52 / 4, 0.0]
    assert depth_from_disparity(pixels).tolist()[0] == pytest.approx(expected, rel=1e-6)
    far = depth_from_disparity(pixels, max_depth=1000.0)[0, 4]
    assert far == pytest.approx(473.5748, rel=1e-6)


def test_cityscapes_samples(cityscapes_root):
    bundle = load_cityscapes(cityscapes_root, size=SIZE, augment=False)
    assert bundle.class_names == CITYSCAPES_CLASS_NAMES and bundle.num_classes == 19
    assert bundle.test.records == bundle.val.records  # test labels are withheld: test = valid
    inputs, label = bundle.val[1]
    raw = stored_labels(cityscapes_root / "valid" / "labels_19" / "city_000001_valid.png")
    assert np.array_equal(label.numpy(), np.where(raw == 0, IGNORE_INDEX, raw.astype(int) - 1))
    from mmanet.data.cityscapes import CITYSCAPES_DEPTH_MEAN, CITYSCAPES_DEPTH_STD

    depth_m = inputs["depth"][0] * CITYSCAPES_DEPTH_STD + CITYSCAPES_DEPTH_MEAN
    expected = BASELINE_M * FOCAL_PX / (raw.astype(np.float64) + 2)  # fixture: d = raw + 2
    assert np.allclose(depth_m.numpy(), expected, rtol=1e-5)


def test_cityscapes_augmentation_keeps_depth_label_aligned(cityscapes_root):
    from mmanet.data.cityscapes import CITYSCAPES_DEPTH_MEAN, CITYSCAPES_DEPTH_STD

    bundle = load_cityscapes(cityscapes_root, size=(16, 20))
    torch.manual_seed(1)
    for index in range(len(bundle.train)):
        inputs, label = bundle.train[index]
        stored = torch.where(label == IGNORE_INDEX, 0, label + 1).double()
        depth_m = inputs["depth"][0].double() * CITYSCAPES_DEPTH_STD + CITYSCAPES_DEPTH_MEAN
        assert torch.allclose(depth_m, BASELINE_M * FOCAL_PX / (stored + 2), rtol=1e-5)


def test_label_out_of_range_names_file(nyuv2_copy):
    path = nyuv2_copy / "train" / "labels_40" / "0001.png"
    labels = stored_labels(path)
    labels[0, 0] = 41
    cv2.imwrite(str(path), labels)
    with pytest.raises(DataError, match=r"0001\.png: label value 41 outside 0"):
        load_nyuv2(nyuv2_copy, size=SIZE).train_eval[0]


def test_size_mismatch_names_file(nyuv2_copy):
    path = nyuv2_copy / "train" / "depth" / "0002.png"
    cv2.imwrite(str(path), np.ones((12, 32), dtype=np.uint16))
    with pytest.raises(DataError, match=r"0002\.png: size 32x12 differs from the rgb image"):
        load_nyuv2(nyuv2_copy, size=SIZE).train_eval[1]


def test_depth_not_16_bit_names_file(nyuv2_copy, cityscapes_root, tmp_path):
    path = nyuv2_copy / "test" / "depth" / "0005.png"
    cv2.imwrite(str(path), np.ones(SIZE, dtype=np.uint8))
    with pytest.raises(DataError, match=r"0005\.png: 1-channel uint8 image; expected 1-channel "):
        load_nyuv2(nyuv2_copy, size=SIZE).test[1]
    root = shutil.copytree(cityscapes_root, tmp_path / "cityscapes")
    cv2.imwrite(str(root / "train/disparity_raw/city_000000_train.png"), np.ones(SIZE, np.uint8))
    with pytest.raises(DataError, match=r"city_000000_train\.png: 1-channel uint8"):
        load_cityscapes(root, size=SIZE).train[0]


def test_missing_index_entry_names_list_and_file(nyuv2_copy):
    with (nyuv2_copy / "train.txt").open("a") as handle:
        handle.write("9999\n")
    with pytest.raises(DataError, match=r"train\.txt, line 4: file not found: .*9999\.png"):
        load_nyuv2(nyuv2_copy)


def test_median_frequency_weights_from_counts():
    weights = median_frequency_weights(np.array([10, 20, 30, 0]), num_classes=4)
    # f = 1/6, 2/6, 3/6 (class 3 absent: weight 0); median 2/6
    assert weights.tolist() == pytest.approx([2.0, 1.0, 2 / 3, 0.0])


class _LabelMaps(Dataset):
    def __init__(self, maps):
        self.maps = maps

    def __len__(self):
        return len(self.maps)

    def __getitem__(self, index):
        return {}, torch.tensor(self.maps[index])


def test_median_frequency_weights_from_dataset():
    maps = _LabelMaps([[[0, 0], [1, IGNORE_INDEX]], [[1, 1], [1, 2]]])
    # pixels of c / pixels of the images containing c: 2/4, 4/8, 1/4; median 1/2
    assert median_frequency_weights(maps, 3).tolist() == pytest.approx([1.0, 1.0, 2.0])


def test_colorize_and_panel(tmp_path):
    labels = np.array([[0, 1], [IGNORE_INDEX, 2]])
    colours = colorize(labels, default_palette(3))
    assert colours[1, 0].tolist() == [0, 0, 0] and colours[0, 0].any()  # void black
    rgb, depth = torch.randn(3, *SIZE), torch.rand(1, *SIZE)
    truth = torch.randint(0, 40, SIZE)
    predictions = {"rgb": truth.flip(0), "depth": truth, "rgb+depth": truth}
    path = tmp_path / "panels" / "sample.png"
    save_prediction_panel(path, rgb, depth, truth, predictions)
    with Image.open(path) as panel:
        assert panel.size == (6 * SIZE[1], SIZE[0] + 12) and panel.mode == "RGB"
    assert [p.name for p in path.parent.iterdir()] == ["sample.png"]  # no temporary left

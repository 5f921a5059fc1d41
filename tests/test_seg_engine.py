"""The one training loop on a segmentation task: pixel loss with void ignored, dense MAD,
MAR histograms over labelled pixels, and mIoU for every combination."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mmanet.config import build_config
from mmanet.data.nyuv2 import load_nyuv2
from mmanet.data.seg_fixtures import write_nyuv2
from mmanet.engine import Trainer, combination_confusions, make_loader
from mmanet.fusion import ConcatFusion
from mmanet.models import MODELS, UnifiedNetwork
from mmanet.tasks import SegmentationTask


class TinyDecoder(nn.Module):
    """(b, c, h, w) fused map -> (features, per-pixel logits)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(8, num_classes, 1)

    def forward(self, fused):
        features = self.body(fused)
        return features, self.classifier(features)


def build_tiny_seg(cfg, modalities, input_shapes, num_classes, reg_head):
    encoders = {
        name: nn.Sequential(nn.Conv2d(input_shapes[name][0], 4, 3, padding=1), nn.ReLU())
        for name in modalities
    }
    width = 4 * len(modalities)
    return UnifiedNetwork(
        modalities,
        encoders,
        ConcatFusion(),
        TinyDecoder(width, num_classes),
        input_shapes,
        reg_head=TinyDecoder(width, num_classes) if reg_head else None,
    )


@pytest.fixture(scope="module")
def nyuv2(tmp_path_factory):
    root = write_nyuv2(tmp_path_factory.mktemp("nyuv2"), n_train=16, n_test=4, size=(24, 32))
    return load_nyuv2(root, size=(24, 32))


@pytest.fixture(autouse=True, scope="module")
def tiny_model():
    MODELS.register("tiny_seg", build_tiny_seg)
    yield
    MODELS.unregister("tiny_seg")


def config(out, method, teacher=None):
    overrides = {
        "out": str(out),
        "model": {"name": "tiny_seg"},
        "method": {"name": method},
        "optim": {"epochs": 3, "warmup_epochs": 1, "milestones": [2], "lr": 0.05},
        "data": {"batch_size": 4, "eval_batch_size": 4},
        "progress": False,
        "tensorboard": False,
    }
    overrides["method"].update({"mar": {"warmup_epochs": 1}, "alpha": 1.0, "teacher": teacher})
    return build_config(overrides=overrides)


def test_segmentation_teacher_and_mmanet_report_miou_per_combination(tmp_path, nyuv2):
    assert nyuv2.task == "segmentation" and nyuv2.ignore_index == 255
    Trainer(config(tmp_path / "teacher", "teacher"), nyuv2).fit()
    trainer = Trainer(
        config(tmp_path / "mmanet", "mmanet", teacher=str(tmp_path / "teacher")),
        nyuv2,
    )
    report = trainer.fit()
    assert list(report["combinations"]) == ["rgb", "depth", "rgb+depth"]
    for metrics in report["combinations"].values():
        assert 0 <= metrics["miou"] <= 100 and len(metrics["per_class_iou"]) == 40
    assert report["average"]["miou"] == pytest.approx(
        sum(m["miou"] for m in report["combinations"].values()) / 3
    )
    assert report["omega"] in (["rgb"], ["depth"])  # m = 2: one singleton
    from PIL import Image

    with Image.open(tmp_path / "mmanet" / "predictions" / "sample-0.png") as panel:
        assert panel.width >= 6 * 32  # rgb | depth | truth | rgb | depth | rgb+depth
    rows = [json.loads(line) for line in (tmp_path / "mmanet" / "log.jsonl").open()]
    assert {"loss_task", "loss_distill", "loss_reg"} <= set(rows[-1])
    assert all(
        0 <= rows[-1][f"train_acc/{n}"] <= 100
        for n in ("rgb", "depth", "rgb+depth")
        if f"train_acc/{n}" in rows[-1]
    )


def test_void_pixels_are_left_out_of_the_confusions(nyuv2):
    model = build_tiny_seg(None, nyuv2.modalities, nyuv2.input_shapes, 40, False)
    loader = make_loader(nyuv2.test, batch_size=4, num_workers=0)
    task = SegmentationTask(nyuv2.class_names, 255)
    confusions = combination_confusions(model, loader, [(1, 1)], task)
    labelled = sum(int((nyuv2.test[i][1] != 255).sum()) for i in range(len(nyuv2.test)))
    assert int(confusions.sum()) == labelled
    assert labelled < len(nyuv2.test) * 24 * 32  # the fixtures do have void pixels
    assert torch.all(confusions >= 0)


def test_median_frequency_class_weights_enter_the_pixel_loss(tmp_path, nyuv2):
    from mmanet.data.rgbd import median_frequency_weights

    plain = Trainer(config(tmp_path / "plain", "sf_md"), nyuv2)
    cfg = config(tmp_path / "weighted", "sf_md")
    cfg.data.class_weighting = "median_frequency"
    weighted = Trainer(cfg, nyuv2)
    expected = median_frequency_weights(nyuv2.train_eval, 40).float()
    assert torch.allclose(weighted.task.class_weights, expected)
    logits = torch.randn(2, 40, 24, 32)
    labels = nyuv2.test[0][1].expand(2, -1, -1).clone()
    manual = torch.nn.functional.cross_entropy(logits, labels, weight=expected, ignore_index=255)
    assert torch.allclose(weighted.task.loss(logits, labels), manual)
    assert not torch.allclose(plain.task.loss(logits, labels), manual)


def test_side_outputs_add_their_pixel_loss_at_their_own_resolution(tmp_path, nyuv2):
    task = Trainer(config(tmp_path, "sf_md"), nyuv2).task
    labels = nyuv2.test[0][1][None]  # (1, 24, 32), with void pixels
    side = torch.randn(1, 40, 12, 16)
    small = labels[:, ::2, ::2]  # nearest downsampling by 2 picks the even rows / columns
    expected = nn.functional.cross_entropy(side, small, ignore_index=255)
    assert torch.allclose(task.side_loss([side], labels), expected)
    assert task.side_loss([], labels) == 0.0


def test_the_pixel_loss_of_a_batch_without_labelled_pixels_is_zero_not_nan(tmp_path, nyuv2):
    trainer = Trainer(config(tmp_path, "sf_md"), nyuv2)
    logits = torch.randn(2, 40, 6, 8, requires_grad=True)
    void = torch.full((2, 6, 8), 255)
    loss = trainer.task.loss(logits, void)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    labels = torch.randint(0, 40, (2, 6, 8))
    labels[0] = 255
    expected = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(trainer.task.loss(logits, labels), expected)


def test_segmentation_mad_reads_the_fused_map_by_default(tmp_path, nyuv2):
    """For segmentation MAD flattens the fused map (method.distill_features=auto,
    docs/method.md#segmentation); ESANet's fused map is its bottleneck map after the
    context module."""
    from mmanet.losses import mad_loss
    from mmanet.models.esanet import ESANetFeatures
    from mmanet.outputs import fused_map

    Trainer(config(tmp_path / "teacher", "teacher"), nyuv2).save()
    trainer = Trainer(config(tmp_path / "mad", "sf_mad", teacher=str(tmp_path / "teacher")), nyuv2)
    assert trainer.cfg.method.distill_features == "auto"
    inputs, labels = next(iter(trainer.train_loader))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    _, terms, _ = trainer.objective(inputs, labels, mask)
    with torch.no_grad():
        out, teacher = trainer.model(inputs, mask), trainer.objective.teacher(inputs)
        on_fused = mad_loss(out.fused, teacher.fused, teacher.logits)
        on_head = mad_loss(out.features, teacher.features, teacher.logits)
    assert out.fused.shape[1] == 8 and out.features.shape[1] == 8  # both maps, different ones
    torch.testing.assert_close(terms["loss_distill"], on_fused)
    assert not torch.allclose(on_fused, on_head)

    context = torch.randn(2, 4, 3, 4)
    assert fused_map(ESANetFeatures(context, [], (96, 128))) is context

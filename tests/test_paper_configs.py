"""The paper configs as the authors ran them: every one builds its full-size network, the
ImageNet file the NYUv2 / Cityscapes configs name, OneCycle stepped per epoch, Nesterov SGD,
ESANet's random scale and ESANet's mIoU over absent classes."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import fast_overrides
from mmanet.config import build_config
from mmanet.errors import ConfigError
from mmanet.experiment import demo_config_path
from mmanet.models import build_model
from mmanet.nn import Bottleneck
from test_sf import HEAD, NETWORK_AUTHORS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER_DIRS = ("casia_surf", "cefa", "nyuv2", "cityscapes")
PAPER_CONFIGS = sorted(str(p) for d in PAPER_DIRS for p in (CONFIGS / d).glob("*.yaml"))
# dataset -> (modalities, classes, (h, w)): the paper's input sizes
EXPECTED = {
    "casia_surf": (["rgb", "depth", "ir"], 2, (112, 112)),
    "cefa": (["rgb", "depth", "ir"], 2, (112, 112)),
    "nyuv2": (["rgb", "depth"], 40, (480, 640)),
    "cityscapes": (["rgb", "depth"], 19, (512, 1024)),
}


def input_shapes(config, modalities: list[str]) -> dict[str, tuple[int, ...]]:
    """The per-sample shapes the config's dataset gives (faces: 3 channels each)."""
    if config.model.name == "sf":
        size = getattr(config.data, config.data.name).image_size
        return {name: (3, size, size) for name in modalities}
    height, width = getattr(config.data, config.data.name).size
    return {"rgb": (3, height, width), "depth": (1, height, width)}


def test_every_paper_folder_has_configs():
    assert {Path(p).parent.name for p in PAPER_CONFIGS} == set(PAPER_DIRS)
    # CASIA-SURF and CeFA: the paper's 8 and DMRNet, ShaSpec; NYUv2: 4 and those two
    assert len(PAPER_CONFIGS) == 10 + 10 + 6 + 4


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: "/".join(Path(p).parts[-2:]))
def test_paper_config_builds_its_full_size_network(path):
    """Every config's network at full width and input size, built on the meta device: the
    same forward propagates the shapes only (ESANet with ResNet-50 at 480 x 640 or
    512 x 1024 takes tens of seconds a forward on a CPU; the SF network runs a real batch in
    test_the_sf_paper_network_runs_a_real_batch)."""
    config = build_config(path, ["model.pretrained=null"])
    modalities, classes, size = EXPECTED[config.data.name]
    shapes = input_shapes(config, modalities)
    reg_head = config.method.regularize != "none"
    with torch.device("meta"):
        model = build_model(config.model, modalities, shapes, classes, reg_head).eval()
    batch = {name: torch.empty(1, *shape, device="meta") for name, shape in shapes.items()}
    with torch.no_grad():
        out = model(batch)
        reg = model.apply_head(out.fused, "reg_head") if reg_head else None
    params = sum(p.numel() for p in model.parameters())
    if config.method.name == "shaspec":  # its own network: tests/test_shaspec.py
        assert out.logits.shape[:2] == (1, classes)
        return
    if config.model.name == "sf":
        assert config.model.stem == "authors" and config.optim.nesterov
        assert shapes["rgb"][1:] == size
        assert model.encoders["rgb"].stem.conv1.kernel_size == (3, 3)
        assert params == NETWORK_AUTHORS + (HEAD if reg_head else 0)
        assert out.fused.shape == (1, 384, 14, 14)
        assert out.features.shape == (1, 512, 4, 4) and out.logits.shape == (1, classes)
        assert reg is None or reg.logits.shape == (1, classes)
        return
    assert config.model.esanet.encoder == "resnet50" and shapes["rgb"][1:] == size
    rgb_encoder = model.fusion.rgb_encoder
    assert isinstance(rgb_encoder.layer1[0], Bottleneck)
    assert rgb_encoder.stage_channels == [256, 512, 1024, 2048]
    h, w = size
    assert out.logits.shape == (1, classes, h, w)
    assert out.fused.map.shape == (1, 512, h // 32, w // 32)
    assert [s.shape[1:] for s in out.fused.skips] == [
        (1024, h // 16, w // 16),
        (512, h // 8, w // 8),
        (256, h // 4, w // 4),
    ]
    assert out.features.shape == (1, 128, h // 4, w // 4)
    assert reg is None or reg.logits.shape == (1, classes, h, w)


def test_the_sf_paper_network_runs_a_real_batch():
    config = build_config(CONFIGS / "casia_surf" / "mmanet.yaml")
    modalities, classes, _ = EXPECTED["casia_surf"]
    shapes = input_shapes(config, modalities)
    torch.manual_seed(0)
    model = build_model(config.model, modalities, shapes, classes, reg_head=True).eval()
    with torch.no_grad():
        out = model({name: torch.randn(1, *shape) for name, shape in shapes.items()})
    assert out.logits.shape == (1, 2) and torch.isfinite(out.logits).all()
    assert out.features.shape == (1, 512, 4, 4)


# What the authors ran (the sources are the comments in the configs), per dataset.
AUTHORS = {
    "casia_surf": {
        "optim": ("sgd", 1e-3, 0.9, True, 5e-4, 100, "step", "step"),
        "schedule": (5, [21, 38, 55], 0.1),  # their 16, 33, 50 behind a 5-epoch shift
        "data": (64, 112, 144, 30.0),
    },
    "nyuv2": {
        "optim": ("sgd", 1e-2, 0.9, True, 1e-4, 300, "onecycle", "epoch"),
        "data": ([480, 640], 1.0, 1.4, "median_frequency", 8),
        "esanet": ("resnet50", 64, [512, 256, 128], 3, "ppm", [1, 5]),
    },
    "cityscapes": {
        "optim": ("adam", 1e-4, 0.9, False, 1e-4, 300, "onecycle", "epoch"),
        "data": ([512, 1024], 0.5, 2.0, "none", 8),
        "esanet": ("resnet50", 64, [512, 256, 128], 3, "ppm_adaptive", [1, 2, 4, 8]),
    },
}
AUTHORS["cefa"] = AUTHORS["casia_surf"]


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: "/".join(Path(p).parts[-2:]))
def test_paper_configs_set_what_the_authors_ran(path):
    config = build_config(path)
    optim, data, model, method = config.optim, config.data, config.model, config.method
    expected = AUTHORS[data.name]
    # the paper's α and β were tuned on the authors' code: its formulation of the losses
    assert method.formulation == "authors"
    if method.distill in ("mad", "sp"):  # the formulation's MAD settings, where MAD is used
        assert (method.mad.relation, method.mad.weighting) == ("gram", "linear")
    assert (method.sp_reduction, method.begin) == ("entries", "after_warmup")
    assert (
        optim.optimizer,
        optim.lr,
        optim.momentum,
        optim.nesterov,
        optim.weight_decay,
        optim.epochs,
        optim.scheduler,
        optim.step_every,
    ) == expected["optim"]
    if model.name == "sf":
        assert (model.stem, model.pretrained) == ("authors", None)
        assert (optim.warmup_epochs, optim.milestones, optim.gamma) == expected["schedule"]
        own = getattr(data, data.name)  # data.casia_surf, data.cefa
        assert (data.batch_size, own.image_size, own.resize, own.rotation) == expected["data"]
        return
    assert optim.onecycle_warmup == 0.1
    assert model.pretrained == "pretrained/resnet50_imagenet.pth"
    own = getattr(data, data.name)  # data.nyuv2, data.cityscapes
    assert (
        own.size,
        own.min_scale,
        own.max_scale,
        data.class_weighting,
        data.batch_size,
    ) == expected["data"]
    esa = model.esanet
    assert (
        esa.encoder,
        esa.width,
        esa.decoder_channels,
        esa.decoder_blocks,
        esa.context,
        esa.context_bins,
    ) == expected["esanet"]


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: "/".join(Path(p).parts[-2:]))
def test_every_paper_config_value_names_its_source(path):
    """Each line that sets a value carries a comment, or follows a comment block about it."""
    previous, depth = "", 0  # depth: open "{" of a flow mapping spanning lines
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split(" #")[0].strip() if not line.strip().startswith("#") else line.strip()
        is_value = text and not text.startswith("#") and not text.endswith(":")
        if is_value and depth == 0 and not text.startswith("extends:"):
            assert "#" in line or previous.startswith("#"), f"{path}:{number}: {text}"
        if is_value:
            depth += text.count("{") - text.count("}")
        previous = line.strip() or previous


def test_appm_pools_like_esanet():
    """ESANet's AdaptivePyramidPoolingModule: bins times int(size / training size + 0.5)."""
    from mmanet.nn.esanet_blocks import PyramidPooling

    config = build_config(CONFIGS / "cityscapes" / "base.yaml")
    assert config.model.esanet.context == "ppm_adaptive"
    assert config.model.esanet.context_bins == [1, 2, 4, 8]  # appm-1-2-4-8
    module = PyramidPooling(8, 8, [1, 2, 4, 8], reference_size=(16, 32))
    assert [module._grid(b, 16, 32) for b in (1, 8)] == [(1, 1), (8, 8)]  # the training size
    assert module._grid(2, 40, 80) == (6, 6)  # x2.5 rounds up, as int(2.5 + 0.5): not to even
    assert module._grid(2, 8, 16) == (2, 2)  # x0.5 rounds up too


def test_nyuv2_config_without_its_imagenet_file_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(
        tmp_path
    )  # the config's relative pretrained/resnet50_imagenet.pth is not here
    config = build_config(CONFIGS / "nyuv2" / "mmanet.yaml")
    assert config.model.pretrained == "pretrained/resnet50_imagenet.pth"
    shapes = {"rgb": (3, 480, 640), "depth": (1, 480, 640)}
    with torch.device("meta"), pytest.raises(ConfigError) as err:
        build_model(config.model, ["rgb", "depth"], shapes, 40, True)
    message = str(err.value)
    assert "\n" not in message
    assert "model.pretrained: file not found: pretrained/resnet50_imagenet.pth" in message


def resnet50_state_dict(width: int) -> dict[str, torch.Tensor]:
    """Random weights under torchvision resnet50's keys for a stem of ``width`` (64: its own)."""
    from mmanet.models.esanet import STAGE_BLOCKS, ResNetEncoder

    torch.manual_seed(1)
    encoder = ResNetEncoder(3, Bottleneck, STAGE_BLOCKS["resnet50"], width)
    weights = {k: v.clone() for k, v in encoder.state_dict().items()}
    for key, value in weights.items():
        if value.is_floating_point():
            weights[key] = torch.rand_like(value) + 0.5  # variances stay positive
    weights["fc.weight"] = torch.zeros(1000, 8 * width * 4)
    weights["fc.bias"] = torch.zeros(1000)
    return weights


@pytest.fixture
def small_esanet(tmp_path):
    """A ResNet-50 ESANet of stem width 8 (its ImageNet-style file is small) and the file."""
    config = build_config(
        CONFIGS / "nyuv2" / "base.yaml", ["model.esanet.width=8", "model.pretrained=null"]
    )
    path = tmp_path / "r50.pth"
    return config.model, path


def build_small(model_cfg, path):
    model_cfg.pretrained = str(path)
    shapes = {"rgb": (3, 64, 64), "depth": (1, 64, 64)}
    return build_model(model_cfg, ["rgb", "depth"], shapes, 40)


def test_resnet50_imagenet_weights_load_into_both_streams(small_esanet):
    model_cfg, path = small_esanet
    weights = resnet50_state_dict(8)
    torch.save(weights, path)
    model = build_small(model_cfg, path)
    rgb, depth = model.fusion.rgb_encoder.state_dict(), model.fusion.depth_encoder.state_dict()
    for key, value in rgb.items():
        assert torch.equal(value, weights[key]), key
        if key != "conv1.weight":
            assert torch.equal(depth[key], weights[key]), key
    # ESANet: a one-channel depth conv1 is the sum of the RGB conv1 over its channels
    expected = weights["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(depth["conv1.weight"], expected)


def test_a_state_dict_that_does_not_fit_names_the_file_and_the_key(small_esanet):
    model_cfg, path = small_esanet
    weights = resnet50_state_dict(8)
    weights["layer1.0.conv2.weight"] = torch.zeros(8, 8, 1, 1)
    torch.save(weights, path)
    with pytest.raises(ConfigError) as err:
        build_small(model_cfg, path)
    message = str(err.value)
    assert "\n" not in message and f"model.pretrained={path}" in message
    assert "'layer1.0.conv2.weight' has shape (8, 8, 1, 1)" in message
    assert "expects (8, 8, 3, 3)" in message
    weights = resnet50_state_dict(8)
    del weights["bn1.running_mean"]
    torch.save({"state_dict": weights}, path)  # nested: no key is where it belongs
    with pytest.raises(ConfigError, match=r"does not hold a state dict of tensors"):
        build_small(model_cfg, path)
    torch.save(weights, path)
    with pytest.raises(ConfigError, match=r"r50\.pth: no weight 'bn1\.running_mean'"):
        build_small(model_cfg, path)


# -- OneCycle stepped per epoch ----------------------------------------------------------


def onecycle_by_hand(step: int, total: int, peak: float, pct: float) -> float:
    """OneCycle's lr at ``step`` of ``total``: cosine from peak/25 up to peak over the first
    pct * total - 1 steps, then cosine down to peak/25/1e4 at the last step."""
    start, end = peak / 25, peak / 25 / 1e4
    rise_end = pct * total - 1

    def cosine(a: float, b: float, fraction: float) -> float:
        return b + (a - b) / 2 * (1 + math.cos(math.pi * fraction))

    if step <= rise_end:
        return cosine(start, peak, step / rise_end)
    return cosine(peak, end, (step - rise_end) / (total - 1 - rise_end))


def authors_classification_lr(epoch: int, base: float = 1e-3) -> float:
    """The lr of the authors' classification loop epoch ``epoch``, by hand. Their loop
    counts from 0 and skips every batch of loop epoch 0, so their loop epoch e is our
    (1-based) epoch e, and their begin epoch (``epoch > 5``) our ``N = 5``.

    Their GradualWarmupScheduler (multiplier 1, total_epoch 5) wraps MultiStepLR(16, 33,
    50) and is stepped with ``epoch=e`` at the end of loop epoch ``e``: ``e <= 5`` sets
    ``base * e / 5``; ``e = 6`` hands over at ``base``; from ``e = 7`` on it steps the
    MultiStepLR with ``e - 5``, which sets ``base * 0.1 ** (milestones <= e - 5)``.
    Loop epoch ``epoch`` runs at what the step after ``epoch - 1`` set (loop epoch 0 at
    the constructor's ``base * 0 / 5``; it skips every batch anyway)."""
    last = epoch - 1  # the last step before this epoch
    if last <= 5:
        return base * max(last, 0) / 5
    if last == 6:
        return base
    return base * 0.1 ** sum(last - 5 >= m for m in (16, 33, 50))


def test_the_classification_lr_is_the_authors_after_the_warmup():
    """Their warm-up wrapper shifts the MultiStepLR by 5 epochs: their decays fall at loop
    epochs 22, 39 and 56, and so do ours (milestones 21, 38, 55: epoch m + 1 is the first
    decayed one). Their loop epoch 0 trains nothing and loop epoch 1 trains at lr 0; ours
    starts at the first warm-up step's lr / (5 * steps per epoch)."""
    from mmanet.engine.schedule import build_scheduler

    steps = 3  # iterations per epoch: the warm-up is per iteration, the decays per epoch
    for folder in ("casia_surf", "cefa"):
        optim = build_config(CONFIGS / folder / "mmanet.yaml").optim
        assert (optim.step_every, optim.epochs) == ("step", 100)
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([parameter], lr=optim.lr, momentum=0.9, nesterov=True)
        scheduler = build_scheduler(optimizer, optim, steps_per_epoch=steps)
        lrs = {}  # 1-based epoch -> the lr of each of its iterations
        for epoch in range(1, optim.epochs + 1):
            lrs[epoch] = []
            for _ in range(steps):
                lrs[epoch].append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                scheduler.step()
        # the first epoch trains, from lr / 15, not at their 0
        assert lrs[1][0] == pytest.approx(1e-3 / 15) and lrs[1][0] > 0
        assert authors_classification_lr(1) == 0.0
        assert lrs[5][-1] == pytest.approx(1e-3)  # the warm-up's end
        by_hand = {6: 1e-3, 21: 1e-3, 22: 1e-4, 38: 1e-4, 39: 1e-5, 55: 1e-5, 56: 1e-6}
        for epoch, lr in by_hand.items():
            assert authors_classification_lr(epoch) == pytest.approx(lr), epoch
            assert lrs[epoch] == pytest.approx([lr] * steps), epoch
        for epoch in range(6, optim.epochs + 1):  # every epoch after the warm-up: theirs
            expected = authors_classification_lr(epoch)
            assert lrs[epoch] == pytest.approx([expected] * steps, rel=1e-12), epoch


def test_the_nyuv2_schedule_is_onecycle_over_300_epochs():
    from mmanet.engine.schedule import build_scheduler

    optim = build_config(CONFIGS / "nyuv2" / "base.yaml").optim
    assert (optim.scheduler, optim.step_every, optim.onecycle_warmup) == ("onecycle", "epoch", 0.1)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=optim.lr, momentum=0.9, nesterov=True)
    scheduler = build_scheduler(optimizer, optim, steps_per_epoch=123)  # per epoch: unused
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(299):  # the 299 epoch boundaries
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.01 / 25)  # epoch 1
    assert lrs[29] == pytest.approx(0.01)  # the peak: epoch 30 = 0.1 * 300
    assert max(lrs) == lrs[29]
    assert lrs[299] == pytest.approx(0.01 / 25 / 1e4)  # the last epoch
    for epoch in (1, 10, 30, 31, 100, 165, 300):
        expected = onecycle_by_hand(epoch - 1, 300, 0.01, 0.1)
        assert lrs[epoch - 1] == pytest.approx(expected, rel=1e-9), epoch


def test_training_steps_the_onecycle_schedule_once_per_epoch(tmp_path, mfeat):
    from mmanet.engine import Trainer

    overrides = {
        "method.name": "sf_md",
        "optim.epochs": 30,
        "optim.scheduler": "onecycle",
        "optim.step_every": "epoch",
        "optim.onecycle_warmup": 0.1,
        "optim.lr": 0.02,
        "optim.nesterov": "true",
    }
    trainer = Trainer(
        build_config(demo_config_path(), fast_overrides(tmp_path, **overrides)), mfeat
    )
    optimizer = trainer.step.optimizer
    assert optimizer.param_groups[0]["nesterov"] is True
    inputs, labels = next(iter(trainer.train_loader))
    seen = {}
    for epoch in (1, 1, 2, 3, 17, 17, 30):  # two steps in epochs 1 and 17; epochs skipped
        trainer.step({k: v.clone() for k, v in inputs.items()}, labels, None, epoch, 1)
        lr = optimizer.param_groups[0]["lr"]
        assert lr == pytest.approx(onecycle_by_hand(epoch - 1, 30, 0.02, 0.1), rel=1e-9), epoch
        assert seen.setdefault(epoch, lr) == lr  # the lr holds within an epoch
    assert seen[2] == pytest.approx((0.02 / 25 + 0.02) / 2)  # half-way up (rise over 2 steps)
    assert seen[3] == pytest.approx(0.02)


def test_step_every_step_keeps_stepping_per_iteration(tmp_path, mfeat):
    from mmanet.engine import Trainer

    overrides = {"method.name": "sf_md", "optim.scheduler": "onecycle", "optim.epochs": 2}
    trainer = Trainer(
        build_config(demo_config_path(), fast_overrides(tmp_path, **overrides)), mfeat
    )
    total, peak = 2 * len(trainer.train_loader), trainer.cfg.optim.lr
    inputs, labels = next(iter(trainer.train_loader))
    for step in (1, 2):  # both in epoch 1: the schedule moves after every iteration
        trainer.step({k: v.clone() for k, v in inputs.items()}, labels, None, 1, step)
        lr = trainer.step.optimizer.param_groups[0]["lr"]
        assert trainer.step.scheduler.last_epoch == step
        assert lr == pytest.approx(onecycle_by_hand(step, total, peak, 0.3), rel=1e-9)


def test_schedule_and_optimizer_keys_are_checked():
    with pytest.raises(ConfigError, match=r"optim\.nesterov needs optim\.optimizer=sgd"):
        build_config(overrides=["optim.optimizer=adam", "optim.nesterov=true"])
    with pytest.raises(ConfigError, match=r"optim\.onecycle_warmup must be in \(0, 1\)"):
        build_config(overrides=["optim.onecycle_warmup=1.0"])
    with pytest.raises(
        ConfigError, match=r"data\.nyuv2\.min_scale must be > 0 and <= data\.nyuv2\.max_scale"
    ):
        build_config(overrides=["data.nyuv2.min_scale=1.5", "data.nyuv2.max_scale=1.4"])
    with pytest.raises(ConfigError, match="step_every"):
        build_config(overrides=["optim.step_every=batch"])


# -- ESANet's random scale of the image as read ------------------------------------------


def label_columns(width: int, height: int) -> np.ndarray:
    """(height, width) uint8 labels that change every 2 columns: label = column // 2."""
    return np.tile((np.arange(width) // 2).astype(np.uint8), (height, 1))


@pytest.mark.parametrize(("scale", "labels_seen"), [((0.5, 0.5), 40), ((2.0, 2.0), 11)])
def test_the_random_scale_is_of_the_image_as_read(scale, labels_seen):
    from mmanet.data.rgbd import segmentation_transforms

    train, _ = segmentation_transforms((20, 40), 0.0, 1.0, augment=True, max_scale=scale)
    rgb, depth = np.zeros((40, 80, 3), np.uint8), np.ones((40, 80), np.float32)
    torch.manual_seed(0)
    _, _, label = train(rgb, depth, label_columns(80, 40))
    assert label.shape == (20, 40)
    # x0.5: the whole 40 x 80 image fits 20 x 40, every label once; x2: labels 4 px wide,
    # a 40-px crop sees 10 or 11 of them
    assert len(label[0].unique()) <= labels_seen and len(label[0].unique()) >= labels_seen - 1


def test_a_scaled_image_smaller_than_the_crop_is_resized_to_it():
    from mmanet.data.rgbd import segmentation_transforms

    train, _ = segmentation_transforms((20, 40), 0.0, 1.0, max_scale=(0.3, 0.45))
    rgb, depth = np.zeros((40, 80, 3), np.uint8), np.ones((40, 80), np.float32)
    torch.manual_seed(0)
    for _ in range(3):
        out_rgb, out_depth, label = train(rgb, depth, label_columns(80, 40))
        assert out_rgb.shape == (3, 20, 40) and out_depth.shape == (1, 20, 40)
        assert label.shape == (20, 40)


def test_data_min_scale_reaches_the_loader_options():
    from mmanet.data.rgbd import segmentation_options

    data = build_config(CONFIGS / "cityscapes" / "base.yaml").data
    assert (data.cityscapes.min_scale, data.cityscapes.max_scale) == (0.5, 2.0)
    assert segmentation_options(data, data.cityscapes, 0.0, 1.0)["max_scale"] == (0.5, 2.0)
    nyuv2 = build_config(CONFIGS / "nyuv2" / "base.yaml").data
    assert segmentation_options(nyuv2, nyuv2.nyuv2, 0.0, 1.0)["max_scale"] == (1.0, 1.4)


# -- mIoU over classes absent from labels and predictions --------------------------------

# rows: true class, columns: predicted. Class 2 is in the labels but never predicted
# (IoU 0); class 3 is in neither (IoU undefined).
CONFUSION = torch.tensor([[3, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
# IoU = TP / (TP + FP + FN): class 0: 3 / (3 + 1 + 1), class 1: 2 / (2 + 1 + 0), class 2: 0 / 1
IOU = [100 * 3 / 5, 100 * 2 / 3, 0.0]


def test_miou_skips_or_zeroes_absent_classes_by_hand():
    from mmanet.metrics import iou_metrics

    skip = iou_metrics(CONFUSION)
    assert skip["miou"] == pytest.approx(sum(IOU) / 3)  # 42.22: the default, the tables'
    assert iou_metrics(CONFUSION, "skip")["miou"] == skip["miou"]
    zero = iou_metrics(CONFUSION, "zero")
    assert zero["miou"] == pytest.approx(sum(IOU) / 4)  # 31.67: ESANet's mean over all 4
    for metrics in (skip, zero):
        assert metrics["per_class_iou"][:3] == pytest.approx(IOU)
        assert math.isnan(metrics["per_class_iou"][3])
        assert metrics["pixel_accuracy"] == pytest.approx(100 * 5 / 7)


def test_the_segmentation_task_reads_miou_absent_from_the_config():
    from mmanet.tasks.segmentation import SegmentationTask

    data = SimpleNamespace(class_names=list("abcd"), ignore_index=255)
    default = SegmentationTask.from_config(data, build_config())
    assert default.metrics_from_confusion(CONFUSION)["miou"] == pytest.approx(sum(IOU) / 3)
    zero = SegmentationTask.from_config(data, build_config(overrides=["miou_absent=zero"]))
    assert zero.metrics_from_confusion(CONFUSION)["miou"] == pytest.approx(sum(IOU) / 4)

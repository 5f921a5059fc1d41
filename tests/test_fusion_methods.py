"""The comparison methods (HeMIS, LCR, RFNet, mmFormer) as methods of every builder: config
presets, networks for m = 2 (ESANet), 3 (SF) and 6 (multiview) modalities, absent inputs
that cannot change the output, and the auxiliary losses in a training step."""

from __future__ import annotations

import pytest
import torch

from mmanet.config import ConfigError, ModelConfig, build_config
from mmanet.modality import all_masks
from mmanet.models import build_model
from mmanet.models.esanet import ESANetSettings
from mmanet.registry import METHODS
from mmanet.tasks import ClassificationTask, SegmentationTask

FUSION_METHODS = [name for name, method in METHODS.items() if method.fusion is not None]

# ESANet at the smallest widths that keep every stage
TINY_ESANET = ESANetSettings(
    encoder="resnet18",
    block="basic",
    width=8,
    decoder_channels=[16, 8, 8],
    decoder_blocks=1,
    context_bins=[1, 2],
)

BUILDERS = {
    # builder: (model config, input shapes, classes)
    "multiview": (
        ModelConfig(name="multiview", head_norm="layer"),
        {f"v{i}": (4 + i,) for i in range(6)},
        3,
    ),
    "sf": (
        ModelConfig(name="sf"),
        {"rgb": (3, 32, 32), "depth": (3, 32, 32), "ir": (3, 32, 32)},
        2,
    ),
    "esanet": (
        ModelConfig(name="esanet", entries={"esanet": TINY_ESANET}),
        {"rgb": (3, 32, 48), "depth": (1, 32, 48)},
        4,
    ),
}


def network(builder: str, fusion: str, aux: bool = False):
    cfg, shapes, classes = BUILDERS[builder]
    cfg = ModelConfig(**{**vars(cfg), "fusion": fusion, "fusion_aux": aux})
    torch.manual_seed(0)
    return build_model(cfg, list(shapes), shapes, classes, False), shapes, classes


def inputs(shapes, batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, *shape, generator=gen) for name, shape in shapes.items()}


def test_presets_select_the_fusion_module():
    for name in FUSION_METHODS:
        config = build_config(overrides=[f"method.name={name}"])
        assert config.model.fusion == name and config.method.dropout
        assert config.method.distill == "none" and config.method.regularize == "none"
        assert config.model.fusion_aux == (name in ("rfnet", "mmformer"))
    mixed = build_config(overrides=["method.name=mmanet", "model.fusion=rfnet"])
    assert mixed.model.fusion == "rfnet" and mixed.method.distill == "mad"
    with pytest.raises(ConfigError, match=r"method\.name=hemis trains model\.fusion=hemis"):
        build_config(overrides=["method.name=hemis", "model.fusion=lcr"])
    with pytest.raises(ConfigError, match=r"model\.fusion_aux: model\.fusion=hemis has no aux"):
        build_config(overrides=["model.fusion=hemis", "model.fusion_aux=true"])


@pytest.mark.parametrize("builder", list(BUILDERS))
@pytest.mark.parametrize("fusion", ["default", *FUSION_METHODS])
def test_absent_inputs_cannot_change_the_output(builder, fusion):
    net, shapes, classes = network(builder, fusion)
    net.eval()
    batch = inputs(shapes)
    m = len(shapes)
    masks = torch.tensor(all_masks(m), dtype=torch.float32)
    rows = masks[torch.randint(len(masks), (4,), generator=torch.Generator().manual_seed(1))]
    rows[0] = 0
    rows[0, 0] = 1  # a single-modality sample
    with torch.no_grad():
        before = net(batch, rows).logits
        noisy = {
            name: x + 100 * (1 - rows[:, i]).view(-1, *[1] * (x.ndim - 1)) * torch.randn_like(x)
            for i, (name, x) in enumerate(batch.items())
        }
        after = net(noisy, rows).logits
    assert before.shape[:2] == (4, classes) and torch.isfinite(before).all()
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("builder", list(BUILDERS))
@pytest.mark.parametrize("fusion", ["rfnet", "mmformer"])
def test_auxiliary_losses_reach_a_training_step(builder, fusion):
    net, shapes, classes = network(builder, fusion, aux=True)
    net.train()
    batch = inputs(shapes)
    label_shape = (4, *next(iter(shapes.values()))[1:]) if builder == "esanet" else (4,)
    labels = torch.randint(0, classes, label_shape)
    mask = torch.tensor([[1] * len(shapes), [1] + [0] * (len(shapes) - 1)] * 2).float()
    out = net.fuse(net.encode(batch), mask, extras=True)
    names = [str(k) for k in range(classes)]
    task = SegmentationTask(names, 255) if builder == "esanet" else ClassificationTask(names)
    aux = task.auxiliary_loss(out.auxiliary, labels)
    assert aux is not None and torch.isfinite(aux) and aux > 0
    aux.backward()
    grads = [p.grad for n, p in net.fusion.named_parameters() if "aux" in n or "head" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)

"""ESANet (docs/method.md#esanet): shapes, the bilinear init of the learned upsampling, the
mask at every fusion point, the regularization decoder, hand counts and the SE-add formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmanet.config import ConfigError, ModelConfig, build_config
from mmanet.models import build_model
from mmanet.models.esanet import ESANetSettings
from mmanet.nn import LearnedUpsample, NonBottleneck1D, SEFusionAdd

MODALITIES = ["rgb", "depth"]
SHAPES = {"rgb": (3, 48, 64), "depth": (1, 48, 64)}
NUM_CLASSES = 5


def tiny(encoder: str = "resnet18", block: str = "nbt1d", **extra) -> ModelConfig:
    esanet = ESANetSettings(
        encoder=encoder, block=block, width=8, decoder_channels=[32, 16, 8], decoder_blocks=1
    )
    for key, value in extra.items():
        setattr(esanet, key, value)
    return ModelConfig(name="esanet", entries={"esanet": esanet})


def build(cfg: ModelConfig | None = None, reg_head: bool = False):
    torch.manual_seed(0)
    return build_model(cfg or tiny(), MODALITIES, SHAPES, NUM_CLASSES, reg_head)


def images(batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, *shape, generator=gen) for name, shape in SHAPES.items()}


@pytest.mark.parametrize(
    ("encoder", "block", "skip_width"),
    [("resnet18", "nbt1d", 8), ("resnet34", "basic", 8), ("resnet50", "basic", 32)],
)
def test_shapes(encoder: str, block: str, skip_width: int) -> None:
    net = build(tiny(encoder, block)).train()
    out = net.fuse(net.encode(images()), extras=True)
    assert out.logits.shape == (2, NUM_CLASSES, 48, 64)
    assert out.features.shape == (2, 8, 12, 16)  # last decoder module, H/4
    assert out.fused.skips[-1].shape == (2, skip_width, 12, 16)  # layer1 after fusion
    sides = out.side_logits
    assert [tuple(s.shape[-2:]) for s in sides] == [(2, 2), (3, 4), (6, 8)]
    assert net(images()).side_logits == []  # only when asked for
    net.eval()
    with torch.no_grad():
        assert net(images()).logits.shape == (2, NUM_CLASSES, 48, 64)


def test_adaptive_context_and_config_keys(tmp_path) -> None:
    net = build(tiny(context="ppm_adaptive", context_bins=[1, 2])).eval()
    with torch.no_grad():
        assert net(images()).logits.shape == (2, NUM_CLASSES, 48, 64)
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: esanet\n  esanet:\n    encoder: resnet50\n    width: 8\n")
    cfg = build_config(path).model
    assert cfg.esanet.encoder == "resnet50" and cfg.esanet.decoder_channels == [512, 256, 128]
    with pytest.raises(ConfigError, match="unknown config key"):
        build_config(path, ["model.esanet.depth=3"])


def test_builder_rejects_other_modalities() -> None:
    with pytest.raises(ConfigError, match="'rgb' and 'depth'"):
        build_model(tiny(), ["rgb", "ir"], {"rgb": (3, 32, 32), "ir": (1, 32, 32)}, 2, False)


def test_learned_upsampling_starts_bilinear() -> None:
    ramp = torch.tensor([[0.0, 1.0, 2.0]])[None, None]  # (1, 1, 1, 3), constant over rows
    # bilinear x2 (align_corners=False) by hand: outputs at source positions
    # -0.25, 0.25, 0.75, 1.25, 1.75, 2.25, clamped at the border
    expected = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.0]).expand(1, 1, 2, 6)
    exact = LearnedUpsample(1, padding="replicate")
    assert torch.allclose(exact(ramp), expected)
    assert torch.allclose(exact(ramp), F.interpolate(ramp, scale_factor=2, mode="bilinear"))
    zero_padded = LearnedUpsample(1)  # ESANet's default: exact away from the border
    wide = torch.arange(12.0).view(1, 1, 3, 4)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    bilinear = F.interpolate(wide, scale_factor=2, mode="bilinear")
    assert torch.allclose(zero_padded(wide)[inner], bilinear[inner])
    constant = torch.full((1, 2, 3, 3), 7.0)
    assert torch.allclose(LearnedUpsample(2, "replicate")(constant), torch.full((1, 2, 6, 6), 7.0))


def test_absent_depth_is_masked_at_every_fusion_point() -> None:
    net = build().eval()
    inputs = images()
    no_depth = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    with torch.no_grad():
        masked = net(inputs, no_depth).logits
        zero_image = net({**inputs, "depth": torch.zeros_like(inputs["depth"])}, no_depth).logits
        perturbed = net({**inputs, "depth": 5 + 3 * inputs["depth"]}, no_depth).logits
        missing = net({"rgb": inputs["rgb"]}).logits
        full = net(inputs).logits
        # the mask, not just the zero input, switches the depth branch off
        zero_depth_unmasked = net({**inputs, "depth": torch.zeros_like(inputs["depth"])}).logits
    assert torch.allclose(masked, zero_image, atol=1e-6)
    assert torch.allclose(masked, perturbed, atol=1e-6)
    assert torch.allclose(masked, missing, atol=1e-6)
    assert not torch.allclose(masked, full, atol=1e-4)
    assert not torch.allclose(masked, zero_depth_unmasked, atol=1e-4)


def test_absent_rgb_and_per_sample_masks() -> None:
    net = build().eval()
    inputs = images()
    mask = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    with torch.no_grad():
        mixed = net(inputs, mask).logits
        full = net(inputs).logits
        depth_only = net({"depth": inputs["depth"]}).logits
        other_rgb = net({**inputs, "rgb": -inputs["rgb"]}, mask).logits
    assert torch.allclose(mixed[0], full[0], atol=1e-6)
    assert torch.allclose(mixed[1], depth_only[1], atol=1e-6)
    assert torch.allclose(mixed[1], other_rgb[1], atol=1e-6)


def test_regularization_decoder_is_separate() -> None:
    net = build(reg_head=True).eval()
    assert net.reg_head is not None and net.reg_head is not net.head
    head_params = {id(p) for p in net.head.parameters()}
    assert not head_params & {id(p) for p in net.reg_head.parameters()}
    assert not any(k.startswith("reg_head.") for k in net.deployment_state_dict())
    with torch.no_grad():
        encoded = net.encode(images())
        deploy = net.fuse(encoded)
        reg = net.apply_head(deploy.fused, "reg_head")
    assert reg.logits.shape == deploy.logits.shape
    assert not torch.allclose(reg.logits, deploy.logits)
    assert build().reg_head is None


def test_predict_masks_matches_forward() -> None:
    net = build().eval()
    inputs = images()
    masks = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    with torch.no_grad():
        table = net.predict_masks(net.encode(inputs), masks)
        for row, mask in enumerate(masks):
            expected = net(inputs, mask.expand(2, -1)).logits
            assert torch.allclose(table[row], expected, atol=1e-5)


def test_nonbottleneck1d_parameter_count() -> None:
    c = 16
    # four factorised convs, each 3 * c * c weights + c biases; two BNs of 2c each
    assert sum(p.numel() for p in NonBottleneck1D(c, c).parameters()) == 4 * (3 * c * c + c) + 4 * c
    block = NonBottleneck1D(8, 8)
    assert block.conv3x1_1.kernel_size == (3, 1) and block.conv1x3_1.kernel_size == (1, 3)
    x = torch.randn(1, 8, 6, 6)
    assert block.eval()(x).shape == x.shape


def test_se_fusion_hand_case() -> None:
    fusion = SEFusionAdd(channels=2, reduction=2)  # hidden width 1
    with torch.no_grad():
        for se, scale in ((fusion.se_rgb, 0.0), (fusion.se_depth, 1.0)):
            first, second = se.fc[0], se.fc[2]
            first.weight.zero_()
            first.bias.zero_()
            second.weight.zero_()
            second.bias.fill_(scale)  # channel weight sigmoid(scale): 0.5 for rgb, s1 for depth
    rgb = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).expand(2, 2, 1, 2)
    depth = torch.tensor([4.0, 8.0]).view(1, 2, 1, 1).expand(2, 2, 1, 2)
    s1 = 1 / (1 + torch.exp(torch.tensor(-1.0)))
    out = fusion(rgb, depth, torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]))
    both = torch.stack([0.5 * 1 + s1 * 4, 0.5 * 2 + s1 * 8]).view(2, 1, 1).expand(2, 1, 2)
    rgb_only = torch.tensor([0.5, 1.0]).view(2, 1, 1).expand(2, 1, 2)
    assert torch.allclose(out[0], both)
    assert torch.allclose(out[1], rgb_only)

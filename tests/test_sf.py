"""The SF network (docs/method.md#the-sf-network): parameter counts by hand for both stems,
torchvision key names, shapes, masks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mmanet.config import ModelConfig
from mmanet.models import build_model
from mmanet.nn import (
    BasicBlock,
    Bottleneck,
    ResNetStem,
    SEBlock,
    load_torchvision_weights,
    make_layer,
)

MODALITIES = ["color", "depth", "ir"]
SHAPES = {name: (3, 112, 112) for name in MODALITIES}


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(cin: int, cout: int, k: int) -> int:
    return cout * cin * k * k  # no bias


def bn(c: int) -> int:
    return 2 * c  # weight + bias; running stats are buffers


def basic_block(cin: int, cout: int, downsample: bool) -> int:
    count = conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
    return count + (conv(cin, cout, 1) + bn(cout) if downsample else 0)


# One stem, ResNet-18 conv1 ... layer2, written out: torchvision's 7x7 conv1, or the authors'
# 3x3 (classification/models/resnet18_se.py), the default (model.stem=authors).
CONV1 = 64 * 3 * 7 * 7  # 9408
CONV1_AUTHORS = 64 * 3 * 3 * 3  # 1728
LAYER1 = 2 * (2 * (64 * 64 * 9) + 2 * bn(64))  # 2 * (2 * 36864 + 256) = 147968
LAYER2 = (
    (64 * 128 * 9)
    + bn(128)
    + (128 * 128 * 9)
    + bn(128)
    + (64 * 128)
    + bn(128)  # 230144
    + 2 * ((128 * 128 * 9) + bn(128))  # 295424
)  # 525568
STEM = CONV1 + bn(64) + LAYER1 + LAYER2  # 683072
STEM_AUTHORS = CONV1_AUTHORS + bn(64) + LAYER1 + LAYER2  # 675392
SE = (128 * 8 + 8) + (8 * 128 + 128)  # 2184: fc 128 -> 128/16 = 8 and back, with biases
# The head on 3 * 128 = 384 concatenated channels.
HEAD_LAYER3 = (
    (384 * 256 * 9)
    + bn(256)
    + (256 * 256 * 9)
    + bn(256)
    + (384 * 256)
    + bn(256)  # 1574400
    + 2 * ((256 * 256 * 9) + bn(256))  # 1180672
)  # 2755072
LAYER4 = (
    (256 * 512 * 9)
    + bn(512)
    + (512 * 512 * 9)
    + bn(512)
    + (256 * 512)
    + bn(512)  # 3673088
    + 2 * ((512 * 512 * 9) + bn(512))  # 4720640
)  # 8393728
FC = 512 * 2 + 2  # 1026
HEAD = HEAD_LAYER3 + LAYER4 + FC  # 11149826
NETWORK = 3 * (STEM + SE) + HEAD  # 13205594 with torchvision's stem
NETWORK_AUTHORS = 3 * (STEM_AUTHORS + SE) + HEAD  # 13182554 with the authors' stem
TORCHVISION = ModelConfig(name="sf", stem="torchvision")


@pytest.fixture(scope="module")
def sf3() -> nn.Module:
    torch.manual_seed(0)
    return build_model(TORCHVISION, MODALITIES, SHAPES, 2, reg_head=True).eval()


def test_hand_counts_add_up():
    assert (STEM, SE, HEAD_LAYER3, LAYER4, HEAD) == (683072, 2184, 2755072, 8393728, 11149826)
    assert (STEM_AUTHORS, NETWORK, NETWORK_AUTHORS) == (675392, 13205594, 13182554)
    assert basic_block(64, 128, True) + basic_block(128, 128, False) == LAYER2
    # ResNet-18 with a 1000-class fc has the well-known 11,689,512 parameters.
    layer3 = basic_block(128, 256, True) + basic_block(256, 256, False)
    assert STEM + layer3 + LAYER4 + 512 * 1000 + 1000 == 11_689_512


def test_parameter_counts(sf3):
    encoder = sf3.encoders["color"]
    assert num_params(encoder.stem) == STEM
    assert num_params(encoder.se) == SE
    assert num_params(sf3.head.layer3) == HEAD_LAYER3
    assert num_params(sf3.head.layer4) == LAYER4
    assert num_params(sf3.head.fc) == FC
    assert num_params(sf3.head) == HEAD
    assert num_params(sf3.reg_head) == HEAD
    assert num_params(sf3) == NETWORK + HEAD  # 24355420 with the regularization head
    deployment = build_model(TORCHVISION, MODALITIES, SHAPES, 2, reg_head=False)
    assert num_params(deployment) == NETWORK


def test_authors_stem_is_the_default_and_has_a_3x3_conv1():
    model = build_model(ModelConfig(name="sf"), MODALITIES, SHAPES, 2, reg_head=True)
    stem = model.encoders["color"].stem
    assert stem.conv1.kernel_size == (3, 3) and stem.conv1.stride == (2, 2)
    assert stem.conv1.padding == (1, 1)
    assert num_params(stem) == STEM_AUTHORS
    assert num_params(model) == NETWORK_AUTHORS + HEAD  # 24332380 with the regularization head
    out = model({name: torch.randn(2, *SHAPES[name]) for name in MODALITIES})
    assert out.fused.shape == (2, 384, 14, 14) and out.logits.shape == (2, 2)


def test_torchvision_weights_refuse_the_authors_stem(tmp_path):
    from mmanet.errors import ConfigError

    torch.save(synthetic_resnet18(), tmp_path / "r18.pth")
    cfg = ModelConfig(name="sf", pretrained=str(tmp_path / "r18.pth"))
    with pytest.raises(ConfigError, match=r"need model\.stem=torchvision") as err:
        build_model(cfg, MODALITIES, SHAPES, 2)
    assert "\n" not in str(err.value) and "r18.pth" in str(err.value)


def torchvision_resnet18_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision resnet18's state dict: key -> shape (parameters and BN buffers)."""

    def bn_keys(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
        return {
            f"{prefix}.weight": (c,),
            f"{prefix}.bias": (c,),
            f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,),
            f"{prefix}.num_batches_tracked": (),
        }

    shapes = {"conv1.weight": (64, 3, 7, 7), **bn_keys("bn1", 64)}
    # stage: (inplanes, planes, has downsample)
    stages = {1: (64, 64, False), 2: (64, 128, True), 3: (128, 256, True), 4: (256, 512, True)}
    for stage, (inplanes, planes, downsample) in stages.items():
        for block in (0, 1):
            p = f"layer{stage}.{block}"
            cin = inplanes if block == 0 else planes
            shapes[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
            shapes |= bn_keys(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes |= bn_keys(f"{p}.bn2", planes)
            if block == 0 and downsample:
                shapes[f"{p}.downsample.0.weight"] = (planes, inplanes, 1, 1)
                shapes |= bn_keys(f"{p}.downsample.1", planes)
    shapes |= {"fc.weight": (1000, 512), "fc.bias": (1000,)}
    return shapes


def synthetic_resnet18() -> dict[str, torch.Tensor]:
    """Random tensors under torchvision resnet18's keys (positive variances, int64 counters)."""
    gen = torch.Generator().manual_seed(3)
    weights = {}
    for key, shape in torchvision_resnet18_shapes().items():
        if key.endswith("num_batches_tracked"):
            weights[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            weights[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            weights[key] = torch.randn(shape, generator=gen)
    return weights


def test_torchvision_resnet18_weights_load_into_every_stem(sf3):
    weights = synthetic_resnet18()
    assert len(weights) == 122
    stem_keys = {k for k in weights if not k.startswith(("layer3.", "layer4.", "fc."))}
    for name in MODALITIES:
        stem = copy.deepcopy(sf3.encoders[name].stem)  # keep the shared fixture untouched
        loaded = load_torchvision_weights(stem, weights)
        assert set(loaded) == stem_keys == set(stem.state_dict())
        for key, value in stem.state_dict().items():
            assert torch.equal(value, weights[key]), key


def test_torchvision_names_match_for_all_four_stages():
    resnet18 = ResNetStem()
    resnet18.layer3 = make_layer(BasicBlock, 128, 256, 2, stride=2)
    resnet18.layer4 = make_layer(BasicBlock, 256, 512, 2, stride=2)
    resnet18.fc = nn.Linear(512, 1000)
    weights = synthetic_resnet18()
    assert set(load_torchvision_weights(resnet18, weights)) == set(weights)
    assert set(resnet18.state_dict()) == set(weights)
    for key, value in resnet18.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_shape_mismatch_names_the_key(sf3):
    before = {k: v.clone() for k, v in sf3.head.state_dict().items()}
    # The SF head's layer3 reads 384 channels, torchvision's 128.
    with pytest.raises(
        ValueError, match=r"'layer3\.0\.conv1\.weight' has shape \(256, 128, 3, 3\)"
    ):
        load_torchvision_weights(sf3.head, synthetic_resnet18())
    # Shapes are checked before anything is copied: the head is left as it was.
    assert all(torch.equal(v, before[k]) for k, v in sf3.head.state_dict().items())


def test_bottleneck_stem_has_resnet50_names_and_counts():
    stem = ResNetStem(block=Bottleneck, layers=(3, 4))
    keys = stem.state_dict()
    assert keys["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
    assert keys["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert keys["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # the stride sits here
    # layer1: block 0 (with downsample) + 2 blocks reading 256 channels.
    block0 = 64 * 64 + bn(64) + 64 * 64 * 9 + bn(64) + 64 * 256 + bn(256) + 64 * 256 + bn(256)
    block = 256 * 64 + bn(64) + 64 * 64 * 9 + bn(64) + 64 * 256 + bn(256)
    assert num_params(stem.layer1) == block0 + 2 * block == 215808
    assert stem(torch.zeros(1, 3, 64, 64)).shape == (1, 512, 8, 8)


def test_se_block_scales_channels_by_a_sigmoid_gate():
    se = SEBlock(32, reduction=16)
    x = torch.randn(2, 32, 5, 5)
    gate = torch.sigmoid(se.fc[2](torch.relu(se.fc[0](x.mean(dim=(2, 3))))))
    assert torch.allclose(se(x), x * gate[:, :, None, None], atol=1e-6)


def test_output_shapes_for_112_pixel_inputs(sf3):
    inputs = {name: torch.randn(2, *SHAPES[name]) for name in MODALITIES}
    assert sf3.encoders["depth"].stem(inputs["depth"]).shape == (2, 128, 14, 14)
    assert sf3.feature_shapes["depth"] == (128, 14, 14)
    out = sf3(inputs)
    assert out.fused.shape == (2, 384, 14, 14)
    assert out.features.shape == (2, 512, 4, 4)
    assert out.logits.shape == (2, 2)
    reg = sf3.apply_head(out.fused, "reg_head")
    assert reg.features.shape == (2, 512, 4, 4)
    assert reg.logits.shape == (2, 2)


def test_missing_modality_is_not_encoded_and_equals_masking_it(sf3):
    gen = torch.Generator().manual_seed(1)
    inputs = {name: torch.randn(2, *SHAPES[name], generator=gen) for name in MODALITIES}
    calls = []
    hook = sf3.encoders["depth"].register_forward_hook(lambda *a: calls.append("depth"))
    try:
        partial = {k: v for k, v in inputs.items() if k != "depth"}
        missing = sf3(partial)
        assert calls == []
        masked = sf3(inputs, torch.tensor([[1.0, 0.0, 1.0]] * 2))
    finally:
        hook.remove()
    assert torch.count_nonzero(missing.fused[:, 128:256]) == 0
    assert torch.allclose(missing.features, masked.features, atol=1e-5)
    assert torch.allclose(missing.logits, masked.logits, atol=1e-5)


def test_two_modalities_and_other_sizes():
    shapes = {"rgb": (3, 64, 80), "ir": (1, 64, 80)}
    model = build_model(ModelConfig(name="sf"), list(shapes), shapes, 3).eval()
    assert model.head.layer3[0].conv1.in_channels == 256
    out = model({name: torch.randn(2, *shape) for name, shape in shapes.items()})
    assert out.fused.shape == (2, 256, 8, 10)
    assert out.features.shape == (2, 512, 2, 3)
    assert out.logits.shape == (2, 3)
    assert model({"ir": torch.randn(1, 1, 64, 80)}).logits.shape == (1, 3)


def test_pretrained_stems_load_from_a_torchvision_state_dict_file(tmp_path):
    from mmanet.config import ModelConfig
    from mmanet.models import build_model

    torch.manual_seed(0)
    weight = torch.randn(64, 3, 7, 7)
    torch.save({"conv1.weight": weight, "fc.weight": torch.zeros(1000, 512)}, tmp_path / "r18.pth")
    shapes = {"rgb": (3, 32, 32), "ir": (3, 32, 32)}
    cfg = ModelConfig(name="sf", pretrained=str(tmp_path / "r18.pth"), stem="torchvision")
    model = build_model(cfg, list(shapes), shapes, 2)
    for name in shapes:
        assert torch.equal(model.encoders[name].stem.conv1.weight, weight)

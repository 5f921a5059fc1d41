"""Folding eval-mode batch norms into convolutions (mmanet.nn.folding): by hand, on every
convolutional model, and on the trainer's teacher."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from mmanet.config import ModelConfig, build_config
from mmanet.data.fixtures import write_casia_surf
from mmanet.engine import Trainer, load_network
from mmanet.models import build_model
from mmanet.nn import Bottleneck, ResNetStem, fold_batch_norms


def randomise_batch_norms(module: nn.Module, seed: int = 0) -> None:
    """Statistics and affine parameters far from the identity, so a wrong fold shows."""
    gen = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=gen))
            bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.weight.data.copy_(torch.randn(c, generator=gen))
            bn.bias.data.copy_(torch.randn(c, generator=gen))


def count(module: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(sub, kind) for sub in module.modules())


def test_folded_convolution_matches_a_hand_computation():
    # w = 2, γ = 3, β = 0.5, μ = 1, σ² = 3, ε = 1: s = γ / √(σ² + ε) = 1.5,
    # folded weight w·s = 3, bias (0 − μ)·s + β = −1; x = 4: BN(8) = (8 − 1)·1.5 + 0.5 = 11.
    conv = nn.Conv2d(1, 1, 1, bias=False)
    bn = nn.BatchNorm2d(1, eps=1.0)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        bn.weight.fill_(3.0)
        bn.bias.fill_(0.5)
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(3.0)
    net = nn.Sequential(conv, bn).eval()
    assert fold_batch_norms(net) == 1
    assert isinstance(net[1], nn.Identity)
    assert net[0].weight.item() == pytest.approx(3.0)
    assert net[0].bias.item() == pytest.approx(-1.0)
    assert net(torch.full((1, 1, 1, 1), 4.0)).item() == pytest.approx(11.0)


FUSIONS = ["default", "concat", "hemis", "lcr", "rfnet", "mmformer"]


def _network(name: str, fusion: str) -> nn.Module:
    cfg = ModelConfig(name=name, fusion=fusion, fusion_aux=fusion in ("rfnet", "mmformer"))
    if name == "sf":
        shapes = {modality: (3, 64, 64) for modality in ("color", "depth", "ir")}
        return build_model(cfg, list(shapes), shapes, 2, reg_head=True)
    cfg.esanet.width = 8
    cfg.esanet.decoder_channels = [32, 16, 8]
    shapes = {"rgb": (3, 48, 64), "depth": (1, 48, 64)}
    return build_model(cfg, list(shapes), shapes, 5, reg_head=True)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("name", ["sf", "esanet"])
def test_a_folded_channels_last_network_computes_what_it_did_with_no_batch_norm_left(name, fusion):
    """What the trainer does to a teacher on the CPU, on every model x fusion."""
    net = _network(name, fusion)
    randomise_batch_norms(net)
    net.eval()
    folded = copy.deepcopy(net)
    batch_norms = count(net, nn.BatchNorm2d)
    assert fold_batch_norms(folded) == batch_norms > 0
    assert count(folded, nn.BatchNorm2d) == 0  # the regularization head's too
    folded.to(memory_format=torch.channels_last)
    inputs = {key: torch.randn(2, *shape) for key, shape in net.input_shapes.items()}
    nhwc = {k: v.contiguous(memory_format=torch.channels_last) for k, v in inputs.items()}
    mask = torch.tensor([[1.0] * len(inputs), [1.0] + [0.0] * (len(inputs) - 1)])
    with torch.no_grad():
        want, got = net(inputs, mask), folded(nhwc, mask)
    for key in ("logits", "features"):  # float error, relative to the output's scale
        expected = getattr(want, key)
        scale = float(expected.abs().max())
        torch.testing.assert_close(getattr(got, key), expected, rtol=0, atol=1e-4 * scale)


def test_bottleneck_stem_folds_all_three_pairs_of_each_block():
    stem = ResNetStem(3, block=Bottleneck, layers=(1, 1))
    randomise_batch_norms(stem)
    stem.eval()
    folded = copy.deepcopy(stem)
    assert fold_batch_norms(folded) == count(stem, nn.BatchNorm2d) == 1 + 2 * 3 + 2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), stem(x), rtol=1e-4, atol=1e-4)


class _Undeclared(nn.Module):
    """A conv whose output the batch norm reads, but also the residual: must not fold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_pairs_outside_a_sequential_fold_only_when_declared():
    net = _Undeclared()
    randomise_batch_norms(net)
    net.eval()
    x = torch.randn(1, 2, 3, 3)
    before = net(x)
    assert fold_batch_norms(net) == 0
    assert isinstance(net.bn, nn.BatchNorm2d)
    torch.testing.assert_close(net(x), before)


def test_folding_a_module_in_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))


def test_the_trainers_teacher_runs_folded_and_channels_last_on_the_cpu(tmp_path):
    """Same teacher outputs as the checkpoint's network, from a folded NHWC teacher."""
    root = write_casia_surf(tmp_path / "surf", n_per_split=8, size=40)
    configs = Path(__file__).resolve().parents[1] / "configs" / "casia_surf"
    short = [
        f"data.root={root}",
        "device=cpu",
        "progress=false",
        "tensorboard=false",
        "data.num_workers=0",
        "data.batch_size=8",
        "data.casia_surf.image_size=32",
        "data.casia_surf.resize=40",
        "optim.epochs=2",
        "optim.warmup_epochs=0",
        "method.mar.warmup_epochs=1",
    ]
    teacher_dir = tmp_path / "teacher"
    Trainer(build_config(configs / "teacher.yaml", [*short, f"out={teacher_dir}"])).fit(
        stop_after=1
    )
    cfg = build_config(
        configs / "mmanet.yaml",
        [*short, f"out={tmp_path / 'mmanet'}", f"method.teacher={teacher_dir}"],
    )
    trainer = Trainer(cfg)
    teacher = trainer.objective.teacher
    assert teacher is not None and count(teacher.network, nn.BatchNorm2d) == 0
    convs = [sub for sub in teacher.network.modules() if isinstance(sub, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)

    raw, _ = load_network(str(teacher_dir))
    assert count(raw, nn.BatchNorm2d) > 0
    inputs, _ = next(iter(trainer.train_loader))
    with torch.no_grad():
        want = raw(inputs)
    got = teacher(inputs)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.features, want.features, rtol=1e-4, atol=1e-4)

"""Fusion modules: shapes, invariance to absent inputs, hand cases, auxiliary losses."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from mmanet.errors import ConfigError
from mmanet.fusion import ConcatFusion, build_fusion
from mmanet.outputs import AuxiliaryLogits
from mmanet.registry import FUSIONS
from mmanet.tasks import ClassificationTask, SegmentationTask

NAMES = list(FUSIONS)
KINDS = ["vector", "map"]
NUM_CLASSES = 5


def make_mask(batch: int, m: int, seed: int = 0) -> torch.Tensor:
    """Random 0/1 rows with at least one 1; the first min(m, batch) rows single-modality."""
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(batch, m, generator=gen) < 0.5).float()
    mask[mask.sum(1) == 0, 0] = 1.0
    for i in range(min(m, batch)):
        mask[i] = 0.0
        mask[i, i] = 1.0
    return mask


def make_features(
    channels: list[int], batch: int, kind: str, size: tuple[int, int] = (4, 4), seed: int = 0
) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = () if kind == "vector" else size
    return [torch.randn(batch, c, *shape, generator=gen) for c in channels]


def expected_width(name: str, channels: list[int]) -> int:
    c, m = max(channels), len(channels)
    # RFNet: a region half and a short-cut half of c // 2 channels each
    # ShaSpec: each modality's [shared ; specific] halves fused to one half, c // 2
    widths = {
        "concat": sum(channels),
        "hemis": 2 * c,
        "rfnet": 2 * (c // 2),
        "shaspec": m * (c // 2),
    }
    return widths.get(name, m * c)


def perturb_absent(features: list[torch.Tensor], mask: torch.Tensor, value: float | None = None):
    """Absent modalities' inputs replaced by large noise (or a constant such as nan)."""
    out = []
    for i, x in enumerate(features):
        absent = (mask[:, i] == 0).view(-1, *[1] * (x.ndim - 1))
        noise = torch.randn_like(x) * 1e3 if value is None else torch.full_like(x, value)
        out.append(torch.where(absent, noise, x))
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m", [2, 3, 6])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_finite(name: str, m: int, kind: str) -> None:
    torch.manual_seed(0)
    channels = [8] * m
    fusion = build_fusion(name, channels, NUM_CLASSES)
    mask = make_mask(8, m)
    out = fusion(make_features(channels, 8, kind), mask)
    spatial = () if kind == "vector" else (4, 4)
    assert fusion.out_channels == expected_width(name, channels)
    assert out.shape == (8, fusion.out_channels, *spatial)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_invariant_to_absent_inputs(name: str, kind: str, train: bool) -> None:
    torch.manual_seed(0)
    channels = [8, 16, 4]
    aux = name in ("rfnet", "mmformer")  # the fusions with auxiliary heads
    fusion = build_fusion(name, channels, NUM_CLASSES, aux=aux).train(train)
    mask = make_mask(6, 3)
    features = make_features(channels, 6, kind)
    noisy = perturb_absent(features, mask)
    with torch.set_grad_enabled(train):  # eval + no_grad also covers the transformer fast path
        reference = fusion(features, mask)
        perturbed = fusion(noisy, mask)
    assert torch.allclose(reference, perturbed, rtol=0.0, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "concat"])
def test_non_finite_absent_inputs_are_ignored(name: str) -> None:
    torch.manual_seed(0)
    fusion = build_fusion(name, [8, 8, 8], NUM_CLASSES).eval()
    mask = make_mask(5, 3)
    features = make_features([8, 8, 8], 5, "map")
    reference = fusion(features, mask)
    assert torch.equal(reference, fusion(perturb_absent(features, mask, float("nan")), mask))


MODALITY_PARAMETERS = {  # parameters that belong to modality 2 alone
    "hemis": r"project\.projections\.2\.",
    "lcr": r"project\.projections\.2\.",
    "rfnet": r"project\.projections\.2\.",
    "mmformer": r"(tokens|intra)\.2\.",
}


@pytest.mark.parametrize("name", list(MODALITY_PARAMETERS))
def test_absent_modality_parameters_are_ignored(name: str) -> None:
    """Stronger than input noise: an absent modality's own input-side parameters
    (projection bias, token projection, intra-modal layer) cannot reach the output either.
    By design some do: mmFormer's position embedding p_i (an absent token is p_i) and LCR's
    estimator Γ_i = MPE_i(0) (tests/test_mmformer_lcr.py)."""
    torch.manual_seed(0)
    channels = [8, 16, 4]
    fusion = build_fusion(name, channels, NUM_CLASSES).eval()
    mask = make_mask(6, 3)
    features = make_features(channels, 6, "map")
    keep = mask[:, 2] == 0
    assert keep.any()
    with torch.no_grad():
        reference = fusion(features, mask)
        for key, param in fusion.named_parameters():
            if re.match(MODALITY_PARAMETERS[name], key):
                param += torch.randn_like(param) * 10
        perturbed = fusion(features, mask)
    assert not torch.allclose(reference[~keep], perturbed[~keep])  # the noise did something
    assert torch.allclose(reference[keep], perturbed[keep], rtol=0.0, atol=1e-5)


def test_unknown_name() -> None:
    with pytest.raises(
        ValueError, match=r"'nope'; registered: concat, hemis, lcr, mmformer, rfnet"
    ):
        build_fusion("nope", [8, 8], NUM_CLASSES)


def test_concat_masks_and_keeps_no_argument_constructor() -> None:
    features = make_features([3, 5], 4, "map")
    mask = make_mask(4, 2)
    fusion = ConcatFusion()
    out = fusion(features, mask)
    assert fusion.out_channels == 8 and ConcatFusion([3, 5]).out_channels == 8
    assert torch.equal(out[:, :3], features[0] * mask[:, 0, None, None, None])
    assert torch.equal(out[:, 3:], features[1] * mask[:, 1, None, None, None])


def test_hemis_hand_computation() -> None:
    fusion = build_fusion("hemis", [1, 1, 1], NUM_CLASSES)
    values = torch.tensor([[2.0, 5.0, 7.0], [1.0, 4.0, 10.0], [1.0, 2.0, 6.0]])
    mask = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    out = fusion([values[:, i : i + 1] for i in range(3)], mask)
    # one present: mean 5, var 0; {1, 10}: mean 5.5, var (4.5² + 4.5²) / 1 = 40.5;
    # {1, 2, 6}: mean 3, var (4 + 1 + 9) / 2 = 7
    expected = torch.tensor([[5.0, 0.0], [5.5, 40.5], [3.0, 7.0]])
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("name", NAMES)
def test_differing_widths_are_projected(name: str) -> None:
    channels = [8, 16, 4]
    fusion = build_fusion(name, channels, NUM_CLASSES)
    out = fusion(make_features(channels, 4, "map"), make_mask(4, 3))
    assert out.shape == (4, expected_width(name, channels), 4, 4)
    if name == "concat":
        return
    if name == "mmformer":  # its per-modality token projection takes c_i to d
        assert [t.in_features for t in fusion.tokens] == channels
        assert {t.out_features for t in fusion.tokens} == {fusion.width}
        return
    convs = fusion.project.projections
    assert [p.in_channels for p in convs] == channels
    assert {p.out_channels for p in convs} == {16} and {p.kernel_size for p in convs} == {(1, 1)}
    assert build_fusion(name, [8, 8, 8], NUM_CLASSES).project.projections is None


# LCR's and mmFormer's own mechanisms: tests/test_mmformer_lcr.py


@pytest.mark.parametrize("kind", KINDS)
def test_rfnet_region_gates_and_probabilities(kind: str) -> None:
    """RFNet's gates are sigmoids (each in (0, 1), not normalised over the modalities, an
    absent modality's gate computed like the others); the regions a softmax."""
    torch.manual_seed(0)
    fusion = build_fusion("rfnet", [8, 8, 8, 8], NUM_CLASSES, regions=3)
    mask = make_mask(6, 4)
    fusion(make_features([8] * 4, 6, kind), mask)
    weights, prob = fusion.last_weights, fusion.last_probabilities
    assert weights.shape == (6, 3, 4) and prob.shape[:2] == (6, 3)
    assert ((weights > 0) & (weights < 1)).all()
    assert not torch.allclose(weights.sum(dim=2), torch.ones(6, 3))
    assert torch.allclose(prob.sum(dim=1), torch.ones(6, *prob.shape[2:]))


def test_mmformer_sample_independent_in_eval() -> None:
    torch.manual_seed(0)
    fusion = build_fusion("mmformer", [8, 8, 8], NUM_CLASSES).eval()
    mask = make_mask(5, 3)
    features = make_features([8, 8, 8], 5, "map", size=(3, 4))
    with torch.no_grad():
        batched = fusion(features, mask)
        for n in range(5):
            alone = fusion([x[n : n + 1] for x in features], mask[n : n + 1])
            assert torch.allclose(batched[n : n + 1], alone, atol=1e-5)
        other = fusion(make_features([8, 8, 8], 2, "map", size=(5, 2)), make_mask(2, 3))
    assert other.shape == (2, 24, 5, 2)


def seg_labels(batch: int) -> torch.Tensor:
    labels = torch.randint(0, NUM_CLASSES, (batch, 8, 8), generator=torch.Generator())
    labels[:, :2] = 255
    labels[0] = 255  # a sample with every pixel ignored
    return labels


def task_for(labels: torch.Tensor):
    names = [str(k) for k in range(NUM_CLASSES)]
    return ClassificationTask(names) if labels.ndim == 1 else SegmentationTask(names, 255)


@pytest.mark.parametrize("labels_kind", ["class", "segmentation"])
@pytest.mark.parametrize("name", ["rfnet", "mmformer"])
def test_auxiliary_loss(name: str, labels_kind: str) -> None:
    torch.manual_seed(0)
    dense = labels_kind == "segmentation"
    own = {"regions": NUM_CLASSES} if name == "rfnet" else {}  # model.rfnet.regions
    fusion = build_fusion(name, [8, 16, 8], NUM_CLASSES, aux=True, region_supervision=dense, **own)
    mask = make_mask(6, 3)
    mask[:, 2] = 0.0  # a modality present in no sample is skipped
    mask[mask.sum(1) == 0, 0] = 1.0
    labels = torch.randint(0, NUM_CLASSES, (6,)) if labels_kind == "class" else seg_labels(6)
    fused, heads = fusion.forward_auxiliary(make_features([8, 16, 8], 6, "map"), mask)
    loss = task_for(labels).auxiliary_loss(heads, labels)
    assert loss is not None and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert fusion.head.weight.grad is not None and fusion.head.weight.grad.abs().sum() > 0
    if name == "rfnet":  # region deep supervision only for dense labels with K == k
        region_grad = fusion.prm[1].weight.grad
        assert (region_grad is not None) == dense
        assert len(heads) == 3 + dense
    torch.testing.assert_close(fusion(make_features([8, 16, 8], 6, "map"), mask), fused)


@pytest.mark.parametrize("name", ["rfnet", "mmformer"])
def test_auxiliary_loss_vectors_and_off(name: str) -> None:
    mask = make_mask(4, 2)
    features = make_features([8, 8], 4, "vector")
    labels = torch.randint(0, NUM_CLASSES, (4,))
    fusion = build_fusion(name, [8, 8], NUM_CLASSES, aux=True)
    _, heads = fusion.forward_auxiliary(features, mask)
    assert torch.isfinite(task_for(labels).auxiliary_loss(heads, labels))
    off = build_fusion(name, [8, 8], NUM_CLASSES)
    assert off.forward_auxiliary(features, mask)[1] == []
    assert task_for(labels).auxiliary_loss([], labels) is None


def test_a_fusion_without_auxiliary_heads_refuses_aux() -> None:
    with pytest.raises(ConfigError, match=r"model\.fusion=hemis has no auxiliary heads"):
        build_fusion("hemis", [8, 8], NUM_CLASSES, aux=True)


def test_auxiliary_losses_match_hand_computation() -> None:
    """Σ_i of the cross-entropy of head i over the samples where modality i is present."""
    torch.manual_seed(0)
    logits = [torch.randn(4, NUM_CLASSES, 2, 2) for _ in range(3)]
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    heads = [AuxiliaryLogits(x, mask[:, i]) for i, x in enumerate(logits)]
    labels = torch.randint(0, NUM_CLASSES, (4,))
    expected = sum(
        F.cross_entropy(x[mask[:, i] > 0].mean((2, 3)), labels[mask[:, i] > 0])
        for i, x in enumerate(logits[:2])
    )
    assert torch.allclose(task_for(labels).auxiliary_loss(heads, labels), expected)
    seg = seg_labels(4)
    up = [F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False) for x in logits]
    expected = sum(
        F.cross_entropy(x[mask[:, i] > 0], seg[mask[:, i] > 0], ignore_index=255)
        for i, x in enumerate(up[:2])
    )
    assert torch.allclose(task_for(seg).auxiliary_loss(heads, seg), expected)

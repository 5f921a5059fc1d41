"""RFNet's region-aware fusion (mmanet.fusion.rfnet) against hand computations on tiny
tensors: sigmoid gates from ONE joint MLP per region over every modality's region-pooled
features, gated region features concatenated (not summed) before their convolution, the
short-cut half, absent modalities as gate-weighted zeros, the region generator guided by
the level below on ESANet, and one shared decoder for every modality's auxiliary output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmanet.config import ModelConfig
from mmanet.fusion import build_fusion
from mmanet.fusion.rfnet import RFNetFusion
from mmanet.models import build_model
from mmanet.models.esanet import SharedModalityDecoder, StreamFusionEncoder
from test_fusion_methods import TINY_ESANET

M, C, K = 3, 4, 2  # modalities, width, regions
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])


def tiny(**options) -> RFNetFusion:
    torch.manual_seed(0)
    return build_fusion("rfnet", [C] * M, 2, regions=K, **options).eval()


def features(seed: int = 0, size: tuple[int, int] = (3, 3)) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(len(MASK), C, *size, generator=gen) for _ in range(M)]


def zeroed(xs: list[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
    """F_i: the modality's features where present, exact zeros where absent."""
    return [torch.where(mask[:, i, None, None, None] > 0, x, 0.0) for i, x in enumerate(xs)]


def hand_gates(fusion: RFNetFusion, maps: list[torch.Tensor], prob: torch.Tensor):
    """g_{k,·} = σ(W2 LeakyReLU(W1 [v_{k,1}, …, v_{k,m}, p̄_k] + b1) + b2), one sample and
    one region at a time, v_{k,i} = mean(P_k F_i) / (mean(P_k) + ε), p̄_k = mean(P_k)."""
    b = prob.shape[0]
    gates = torch.empty(b, K, M)
    for n in range(b):
        for k in range(K):
            p = prob[n, k]
            p_bar = p.mean()
            pooled = [(p * x[n]).mean(dim=(1, 2)) / (p_bar + fusion.eps) for x in maps]
            v = torch.cat([*pooled, p_bar.view(1)])
            first, second = fusion.gates[k][0], fusion.gates[k][2]
            hidden = F.leaky_relu(first.weight @ v + first.bias, 0.2)
            gates[n, k] = torch.sigmoid(second.weight @ hidden + second.bias)
    return gates


def hand_forward(fusion: RFNetFusion, xs: list[torch.Tensor], mask: torch.Tensor):
    """(out, gates, probabilities, region features R_k) written out."""
    maps = zeroed(xs, mask)
    joint = torch.cat(maps, dim=1)
    prob = fusion.prm(fusion.embedding(joint)).softmax(dim=1)
    gates = hand_gates(fusion, maps, prob)
    regions = [
        sum(gates[:, k, i, None, None, None] * prob[:, k : k + 1] * maps[i] for i in range(M))
        for k in range(K)
    ]
    region_half = fusion.region_fusion(torch.cat(regions, dim=1))
    out = torch.cat([region_half, fusion.short_cut(joint)], dim=1)
    return out, gates, prob, regions


@torch.no_grad()
def test_gates_are_sigmoids_of_one_joint_mlp_over_every_modality() -> None:
    fusion = tiny()
    xs = features()
    # the gate MLP alone, for fixed region maps: modality 2's pooled features move
    # modality 0's gates (one joint MLP, not one per modality)
    fixed = torch.randn(len(MASK), K, 3, 3, generator=torch.Generator()).softmax(dim=1)
    stacked = torch.stack(zeroed(xs, MASK), dim=1)
    changed = stacked.clone()
    changed[:, 2] += 1.0
    before, after = fusion.region_gates(stacked, fixed), fusion.region_gates(changed, fixed)
    assert (after[:, :, 0] - before[:, :, 0]).abs().min() > 1e-5
    torch.testing.assert_close(after, hand_gates(fusion, list(changed.unbind(1)), fixed))
    # the whole module, by hand
    out = fusion(xs, MASK)
    want, gates, prob, _ = hand_forward(fusion, xs, MASK)
    torch.testing.assert_close(fusion.last_probabilities, prob)
    torch.testing.assert_close(fusion.last_weights, gates)
    torch.testing.assert_close(out, want)
    # through the module: changing modality 2's input moves modality 0's gates where
    # both are present (sample 0), not where modality 2 is absent (sample 3)
    other = [xs[0], xs[1], xs[2] + torch.randn(xs[2].shape, generator=torch.Generator())]
    fusion(other, MASK)
    moved = fusion.last_weights
    assert (moved[0, :, 0] - gates[0, :, 0]).abs().min() > 1e-4
    torch.testing.assert_close(moved[3], gates[3], rtol=0, atol=1e-6)
    torch.testing.assert_close(moved, hand_forward(fusion, other, MASK)[1])


@torch.no_grad()
def test_regions_are_concatenated_before_the_convolution() -> None:
    fusion = tiny()
    xs = features(1)
    first = fusion.region_fusion[0][0]
    assert first.in_channels == K * C and fusion.short_cut[0][0].in_channels == M * C
    out = fusion(xs, MASK)
    _, _, _, regions = hand_forward(fusion, xs, MASK)
    half = fusion.out_channels // 2
    torch.testing.assert_close(out[:, :half], fusion.region_fusion(torch.cat(regions, dim=1)))
    swapped = fusion.region_fusion(torch.cat(regions[::-1], dim=1))  # order matters: no sum
    assert (swapped - out[:, :half]).abs().max() > 1e-3


@torch.no_grad()
def test_the_short_cut_half_is_exactly_its_term() -> None:
    fusion = tiny()
    xs = features(2)
    out = fusion(xs, MASK)
    half = fusion.out_channels // 2
    short_cut = fusion.short_cut(torch.cat(zeroed(xs, MASK), dim=1))
    assert short_cut.abs().max() > 0
    torch.testing.assert_close(out[:, half:], short_cut)
    hook = fusion.short_cut.register_forward_hook(lambda mod, args, y: torch.zeros_like(y))
    try:
        without = fusion(xs, MASK)
    finally:
        hook.remove()
    term = torch.cat([torch.zeros_like(out[:, :half]), short_cut], dim=1)
    torch.testing.assert_close(without, out - term, rtol=0, atol=0)


@torch.no_grad()
def test_absent_modalities_are_gate_weighted_zeros() -> None:
    fusion = tiny()
    xs = features(3)
    nan = [torch.where(MASK[:, i, None, None, None] > 0, x, float("nan")) for i, x in enumerate(xs)]
    seen = {}
    hook = fusion.region_fusion.register_forward_hook(lambda mod, args, y: seen.update(r=args[0]))
    try:
        out = fusion(nan, MASK)
    finally:
        hook.remove()
    want, gates, _, regions = hand_forward(fusion, xs, MASK)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(seen["r"], torch.cat(regions, dim=1))
    # RFNet computes every modality's gate, the absent ones' too (from their zero pooled
    # features): a gate in (0, 1) that multiplies exact zeros
    absent = MASK == 0
    assert ((fusion.last_weights > 0) & (fusion.last_weights < 1)).all()
    torch.testing.assert_close(fusion.last_weights, gates)
    assert gates.permute(0, 2, 1)[absent].min() > 0
    # sample 2 has modality 1 alone: R_k = g_{k,1} P_k F_1
    prob = fusion.last_probabilities
    for k in range(K):
        alone = gates[2, k, 1] * prob[2, k] * xs[1][2]
        torch.testing.assert_close(regions[k][2], alone)


def test_supervised_region_maps_are_detached_from_the_fusion() -> None:
    """RFNet feeds the RFM the detached probability maps: with region supervision the
    generator learns from its own loss only; without, from the fused output's."""
    xs = features(4)
    for supervised in (True, False):
        fusion = build_fusion(
            "rfnet", [C] * M, K, regions=K, aux=True, region_supervision=supervised
        )
        fusion(xs, MASK).sum().backward()
        assert (fusion.prm[1].weight.grad is None) == supervised


def test_widths_small_and_paper() -> None:
    c = 16
    small = build_fusion("rfnet", [c, c], 3, regions=K, widths="small")
    paper = RFNetFusion([c, c], 3, regions=K, widths="paper")
    assert small.out_channels == paper.out_channels == c
    # RFNet: gate MLP 2c + 1 → 128 → 2; PRM layer c → 16 → K; embedding 2c → c/4 → c/4 → c;
    # region / short-cut stacks K c (2 c) → c → c → c/2
    assert [paper.gates[0][0].in_features, paper.gates[0][0].out_features] == [2 * c + 1, 128]
    assert paper.prm[0][0].out_channels == 16 and paper.prm[1].out_channels == K
    embedding = [block[0].out_channels for block in paper.embedding]
    assert paper.embedding[0][0].in_channels == 2 * c and embedding == [c // 4, c // 4, c]
    assert [block[0].out_channels for block in paper.region_fusion] == [c, c, c // 2]
    assert [block[0].out_channels for block in paper.short_cut] == [c, c, c // 2]
    assert paper.region_fusion[1][0].kernel_size == (3, 3)
    assert small.gates[0][0].out_features == 16 and small.prm[0][0].out_channels == 8
    assert [block[0].out_channels for block in small.region_fusion] == [c // 4, c // 4, c // 2]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in paper.parameters())
    vectors = build_fusion("rfnet", [c, c], 3, vectors=True)
    assert {m.kernel_size for m in vectors.modules() if isinstance(m, torch.nn.Conv2d)} == {(1, 1)}
    with pytest.raises(ValueError, match="widths"):
        RFNetFusion([c, c], 3, widths="huge")


@torch.no_grad()
def test_the_shared_classifier_is_one_head_for_every_modality() -> None:
    """On classification features (vectors) the per-modality auxiliary outputs are one
    1×1 classifier (W, b) applied to each modality's features alone."""
    fusion = build_fusion("rfnet", [C] * M, 5, aux=True, vectors=True).eval()
    xs = [x[:, :, 0, 0] for x in features(5)]
    _, heads = fusion.forward_auxiliary(xs, MASK)
    assert len(heads) == M  # no region term: class labels cannot supervise regions
    weight, bias = fusion.head.weight.flatten(1), fusion.head.bias
    for i, head in enumerate(heads):
        present = MASK[:, i] > 0
        want = torch.where(present[:, None], xs[i], 0.0) @ weight.T + bias
        torch.testing.assert_close(head.logits.flatten(1), want)
        assert torch.equal(head.weights, present)


# -- on ESANet: the guided generators and the shared per-modality decoder --------------

SHAPES = {"rgb": (3, 32, 48), "depth": (1, 32, 48)}


def esanet_rfnet():
    cfg = ModelConfig(
        name="esanet", fusion="rfnet", fusion_aux=True, entries={"esanet": TINY_ESANET}
    )
    torch.manual_seed(0)
    return build_model(cfg, list(SHAPES), SHAPES, 4, False).eval()


def stage_maps(encoder: StreamFusionEncoder, images: list[torch.Tensor]):
    """Per stream, its layer1..layer4 maps, written out."""
    out = []
    for stream, x in zip(encoder.streams, images, strict=True):
        x = stream.maxpool(stream.stem(x))
        maps = []
        for stage in stream.stages():
            x = stage(x)
            maps.append(x)
        out.append(maps)
    return out


@torch.no_grad()
def test_esanet_inner_region_generators_read_the_fused_level_below() -> None:
    net = esanet_rfnet()
    encoder = net.fusion
    widths = encoder.streams[0].stage_channels
    assert [f.guided for f in encoder.fusions] == [True, True, True, False]
    assert [f.guide[0].in_channels for f in encoder.fusions[:3]] == widths[1:]
    gen = torch.Generator().manual_seed(0)
    images = [torch.randn(2, *shape, generator=gen) for shape in SHAPES.values()]
    mask = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    images = [x * mask[:, i, None, None, None] for i, x in enumerate(images)]
    encoder(images, mask)
    streams = stage_maps(encoder, images)
    below = encoder.fusions[3]([s[3] for s in streams], mask)  # layer4, no guide
    for level in (2, 1, 0):
        fusion = encoder.fusions[level]
        maps = zeroed([s[level] for s in streams], mask)
        z = fusion.embedding(torch.cat(maps, dim=1))
        up = F.interpolate(below, size=z.shape[-2:], mode="bilinear", align_corners=True)
        prob = fusion.prm(torch.cat([z, fusion.guide(up)], dim=1)).softmax(dim=1)
        torch.testing.assert_close(fusion.last_probabilities, prob)
        unguided = fusion.prm(torch.cat([z, fusion.guide(torch.zeros_like(up))], dim=1))
        assert (unguided.softmax(dim=1) - prob).abs().max() > 1e-4  # the guide matters
        below = fusion.fuse([s[level] for s in streams], mask, False, guide=below)[0]


@torch.no_grad()
def test_esanet_auxiliary_outputs_come_from_one_shared_decoder() -> None:
    net = esanet_rfnet()
    encoder = net.fusion
    decoder = encoder.aux_decoder
    assert isinstance(decoder, SharedModalityDecoder)
    assert all(f.head is None for f in encoder.fusions)  # no per-stage modality heads
    gen = torch.Generator().manual_seed(1)
    images = [torch.randn(2, *shape, generator=gen) for shape in SHAPES.values()]
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    images = [x * mask[:, i, None, None, None] for i, x in enumerate(images)]
    _, heads = encoder.forward_auxiliary(images, mask)
    assert len(heads) == 4 + 2  # a region map per stage, then one output per modality
    streams = stage_maps(encoder, images)
    for i, head in enumerate(heads[-2:]):
        own = streams[i]
        context = decoder.context(own[3])
        out = context
        for module, skip in zip(decoder.decoder.decoder_modules, own[2::-1], strict=True):
            out = module(out, skip)[0]
        dec = decoder.decoder
        logits = dec.upsample2(dec.upsample1(dec.conv_out(out)))[..., :32, :48]
        torch.testing.assert_close(head.logits, logits)
        assert head.logits.shape == (2, 4, 32, 48)
        assert torch.equal(head.weights, mask[:, i] > 0)
    # one set of weights: a change of the shared decoder moves every modality's output
    for p in decoder.parameters():
        p.add_(0.1)
    _, moved = encoder.forward_auxiliary(images, mask)
    for before, after in zip(heads[-2:], moved[-2:], strict=True):
        assert (before.logits - after.logits).abs().max() > 1e-4

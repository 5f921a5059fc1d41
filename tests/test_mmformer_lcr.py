"""mmFormer's and LCR's defining behaviours, each against a hand computation on tiny tensors.

mmFormer: absent modalities' (zeroed) tokens are attended, no key padding mask; learned
positional embeddings per modality; the auxiliary logits of every modality come from one
shared decoder. LCR: every modality's representation is its latent correlation
expression from the others, an absent modality's built from the present ones alone.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmanet.fusion import LCRFusion, MMFormerFusion, build_fusion

NUM_CLASSES = 3


# -- mmFormer, written out ---------------------------------------------------------------


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def heads_of(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(b, n, d) -> (b, H, n, d / H): head h takes channels [h e, (h + 1) e)."""
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def attention_weights(layer, x: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
    """softmax(Q Kᵀ / √e) of the layer's attention on LN_1(x); ``hidden`` (b, n) True keys
    are removed (a key padding mask), None removes nothing."""
    attention = layer.attention
    w_q, w_k, _ = attention.qkv.weight.chunk(3, dim=0)
    y = layer_norm(x, layer.norm1)
    q, k = heads_of(y @ w_q.T, attention.heads), heads_of(y @ w_k.T, attention.heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if hidden is not None:
        scores = scores.masked_fill(hidden[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1)


def transformer_layer(layer, x: torch.Tensor, hidden: torch.Tensor | None = None):
    """x + W_o cat_h(A_h V_h) + b_o, then x + W_2 GELU(W_1 LN_2(x) + b_1) + b_2."""
    attention = layer.attention
    weights = attention_weights(layer, x, hidden)
    _, _, w_v = attention.qkv.weight.chunk(3, dim=0)
    v = heads_of(layer_norm(x, layer.norm1) @ w_v.T, attention.heads)
    mixed = (weights @ v).transpose(1, 2).flatten(2)
    x = x + mixed @ attention.proj.weight.T + attention.proj.bias
    first, last = layer.feed_forward[0], layer.feed_forward[3]
    hidden_units = F.gelu(layer_norm(x, layer.norm2) @ first.weight.T + first.bias)
    return x + hidden_units @ last.weight.T + last.bias


def intra_tokens(fusion: MMFormerFusion, vectors, mask) -> list[torch.Tensor]:
    """Z_i = Layer_i((1_i F_i) W_iᵀ + b_i + p_i), one token per vector, (b, 1, d)."""
    streams = []
    for i, x in enumerate(vectors):
        x = torch.where(mask[:, i : i + 1] > 0, x, 0.0)
        tokens = x @ fusion.tokens[i].weight.T + fusion.tokens[i].bias
        pos = fusion.pos[i, :, 0, 0]
        streams.append(transformer_layer(fusion.intra[i].layers[0], (tokens + pos)[:, None]))
    return streams


def inter_input(fusion: MMFormerFusion, vectors, mask) -> torch.Tensor:
    """[1_1 Z_1 + p_1, ..., 1_m Z_m + p_m], (b, m, d)."""
    streams = intra_tokens(fusion, vectors, mask)
    zeroed = [torch.where(mask[:, i, None, None] > 0, z, 0.0) for i, z in enumerate(streams)]
    return torch.cat(zeroed, dim=1) + fusion.pos[:, :, 0, 0]


def mmformer_by_hand(fusion: MMFormerFusion, vectors, mask, key_padding: bool) -> torch.Tensor:
    """The fused vectors: the inter-modal layer over all m tokens (or, ``key_padding``,
    over the present ones only), then the 1×1 conv on the concatenated tokens."""
    hidden = (mask == 0) if key_padding else None
    fused = transformer_layer(fusion.inter.layers[0], inter_input(fusion, vectors, mask), hidden)
    return fused.flatten(1) @ fusion.out.weight[:, :, 0, 0].T + fusion.out.bias


def tiny_mmformer(m: int = 3, aux: bool = False, seed: int = 0) -> MMFormerFusion:
    """d = 8, 2 heads, feed-forward 16, vectors; random position embeddings (mmFormer
    starts them at zero) so that every modality's differs."""
    torch.manual_seed(seed)
    fusion = MMFormerFusion(
        [4, 6, 5][:m], NUM_CLASSES, aux=aux, width=8, num_heads=2, ff_ratio=2, vectors=True
    )
    with torch.no_grad():
        fusion.pos.normal_()
    return fusion.eval()


def tiny_vectors(m: int = 3, batch: int = 4, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, generator=gen) for c in [4, 6, 5][:m]]


MASK = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_mmformer_attends_to_the_zeroed_tokens_of_absent_modalities():
    fusion = tiny_mmformer()
    vectors = tiny_vectors()
    with torch.no_grad():
        out = fusion(vectors, MASK)
        unmasked = mmformer_by_hand(fusion, vectors, MASK, key_padding=False)
        masked = mmformer_by_hand(fusion, vectors, MASK, key_padding=True)
        weights = attention_weights(
            fusion.inter.layers[0], inter_input(fusion, vectors, MASK), None
        )
    torch.testing.assert_close(out, unmasked, rtol=0, atol=1e-5)
    absent = MASK == 0  # (b, m): the absent modalities' token positions
    on_absent = weights.permute(0, 3, 1, 2)[absent]  # every head and query, absent keys
    assert on_absent.numel() > 0 and (on_absent > 1e-4).all()
    # a key padding mask would give them weight 0 and another output
    partial = absent.any(dim=1)
    assert (out[partial] - masked[partial]).abs().amax(dim=1).min() > 1e-3
    torch.testing.assert_close(out[~partial], masked[~partial], rtol=0, atol=1e-5)


def test_mmformer_zeroes_absent_modalities_after_the_intra_modal_transformer():
    """An absent modality's token is exactly its position embedding p_i at the inter-modal
    layer: its input, token projection and intra-modal layer cannot reach the output."""
    fusion = tiny_mmformer()
    vectors = tiny_vectors()
    with torch.no_grad():
        tokens = inter_input(fusion, vectors, MASK)
        reference = fusion(vectors, MASK)
        fusion.tokens[1].bias.add_(5.0)
        fusion.intra[1].layers[0].feed_forward[3].bias.add_(5.0)
        changed = fusion(vectors, MASK)
    assert torch.equal(tokens[0, 1], fusion.pos[1, :, 0, 0])  # sample 0 lacks modality 1
    keep = MASK[:, 1] == 0
    torch.testing.assert_close(changed[keep], reference[keep], rtol=0, atol=0)
    assert not torch.allclose(changed[~keep], reference[~keep])


def test_mmformer_position_embeddings_are_learned_per_modality():
    fusion = tiny_mmformer()
    parameters = dict(fusion.named_parameters())
    assert parameters["pos"] is fusion.pos and fusion.pos.requires_grad
    assert fusion.pos.shape == (3, 8, 1, 1)  # one (d, 1, 1) grid per modality for vectors
    maps = MMFormerFusion([4, 4], NUM_CLASSES, width=8, pos_grid=(2, 2))
    assert maps.pos.shape == (2, 8, 2, 2)
    with torch.no_grad():
        maps.pos.normal_()
    # at the grid's size the embedding is the grid itself, row-major; at 1 × 1 the
    # bilinear resampling (align_corners=False) reads the centre: the mean of the 4 cells
    assert torch.equal(maps.position(1, 2, 2), maps.pos[1].flatten(1).T)
    torch.testing.assert_close(maps.position(1, 1, 1)[0], maps.pos[1].mean(dim=(1, 2)))
    # learned: the loss reaches every modality's embedding, an absent modality's too
    # (its token is p_i); the hand computation above reads p_i for modality i
    fusion.train()
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    fusion(tiny_vectors(batch=2), mask).square().sum().backward()
    assert (fusion.pos.grad.flatten(1).abs().sum(dim=1) > 0).all()


def test_mmformer_auxiliary_logits_come_from_one_shared_decoder():
    fusion = tiny_mmformer(aux=True)
    bn = fusion.decoder[1]
    with torch.no_grad():  # eval-mode batch norm with statistics far from the identity
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    vectors = tiny_vectors()
    with torch.no_grad():
        _, heads = fusion.forward_auxiliary(vectors, MASK)
        streams = intra_tokens(fusion, vectors, MASK)
    conv, head = fusion.decoder[0], fusion.head
    assert len(heads) == 3
    for i, z in enumerate(streams):  # y_i = head(LeakyReLU(BN(conv(Z_i)))), the same weights
        y = z[:, 0] @ conv.weight[:, :, 0, 0].T
        y = (y - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        y = F.leaky_relu(y, 0.2) @ head.weight[:, :, 0, 0].T + head.bias
        torch.testing.assert_close(heads[i].logits[:, :, 0, 0], y, rtol=0, atol=1e-5)
        assert torch.equal(heads[i].weights, MASK[:, i] > 0)
    classifiers = [m for m in fusion.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in classifiers].count(NUM_CLASSES) == 1


def test_mmformer_widths_and_the_decoder_on_maps():
    paper = build_fusion("mmformer", [64, 32], NUM_CLASSES, aux=True)
    assert paper.width == 512 and paper.inter.layers[0].attention.heads == 8
    assert paper.inter.layers[0].feed_forward[0].out_features == 4096
    assert paper.out_channels == 2 * 64 and paper.pos.shape == (2, 512, 8, 8)
    assert paper.decoder[0].kernel_size == (3, 3)
    small = MMFormerFusion([6, 6], NUM_CLASSES, aux=True, width=16)
    maps = [torch.randn(2, 6, 3, 5) for _ in range(2)]
    fused, heads = small.forward_auxiliary(maps, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert fused.shape == (2, 12, 3, 5)
    assert [h.logits.shape for h in heads] == [(2, NUM_CLASSES, 3, 5)] * 2


# -- LCR, written out --------------------------------------------------------------------


def coefficients(fusion: LCRFusion, i: int, x: torch.Tensor):
    """(α_{i←j} for j ≠ i in modality order, δ_i) from Γ_i = MLP_i(GAP(F_i))."""
    first, last = fusion.estimators[i].mlp[0], fusion.estimators[i].mlp[2]
    gap = x.mean(dim=(2, 3))
    theta = torch.relu(gap @ first.weight.T + first.bias) @ last.weight.T + last.bias
    c, m = x.shape[1], fusion.num_modalities
    theta = theta.view(-1, m, c)
    others = [j for j in range(m) if j != i]
    alphas = {j: 1.0 + theta[:, k, :, None, None] for k, j in enumerate(others)}
    return alphas, theta[:, m - 1, :, None, None]


def lcr_by_hand(fusion: LCRFusion, maps, mask) -> list[torch.Tensor]:
    """R_i = Σ_{j ∈ P∖{i}} α_{i←j} ⊙ F_j + δ_i, with Γ_i from F_i (zeros when i is absent)."""
    zeroed = [torch.where(mask[:, i, None, None, None] > 0, x, 0.0) for i, x in enumerate(maps)]
    out = []
    for i in range(len(maps)):
        alphas, delta = coefficients(fusion, i, zeroed[i])
        total = delta.expand_as(zeroed[i]).clone()
        for j, alpha in alphas.items():
            total = total + (mask[:, j, None, None, None] > 0) * alpha * zeroed[j]
        out.append(total)
    return out


def tiny_lcr(seed: int = 0) -> LCRFusion:
    """m = 3, c = 2, with the estimators' zero-initialised last layers made random."""
    torch.manual_seed(seed)
    fusion = LCRFusion([2, 2, 2])
    with torch.no_grad():
        for estimator in fusion.estimators:
            estimator.mlp[2].weight.normal_()
            estimator.mlp[2].bias.normal_()
    return fusion.eval()


def tiny_maps(seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 2, 2, 3, generator=gen) for _ in range(3)]


def test_lcr_every_representation_is_its_correlation_expression():
    fusion = tiny_lcr()
    maps = tiny_maps()
    with torch.no_grad():
        correlated = fusion.correlate(fusion.project(maps, MASK > 0))
        expected = lcr_by_hand(fusion, maps, MASK)
        for i in range(3):
            torch.testing.assert_close(correlated[i], expected[i], rtol=0, atol=1e-5)
        fused = fusion(maps, MASK)
        torch.testing.assert_close(
            fused, fusion.out(fusion.attention(torch.cat(expected, dim=1))), rtol=0, atol=1e-5
        )


def test_lcr_a_present_modality_is_transformed_by_the_other_present_ones():
    fusion = tiny_lcr()
    maps = tiny_maps()
    changed = [x.clone() for x in maps]
    changed[2] = changed[2] + 1.0  # sample 0 has modalities 0 and 2
    with torch.no_grad():
        before = fusion.correlate(fusion.project(maps, MASK > 0))
        after = fusion.correlate(fusion.project(changed, MASK > 0))
    assert (after[0][0] - before[0][0]).abs().amin() > 1e-4  # present 0 follows present 2
    alphas, _ = coefficients(fusion, 0, maps[0])
    torch.testing.assert_close(after[0][0] - before[0][0], alphas[2][0].expand(2, 2, 3))
    assert not torch.equal(after[2][0], before[2][0])  # R_2 reads Γ_2(F_2)
    assert torch.equal(after[0][2], before[0][2])  # sample 2 lacks modality 2


def test_lcr_an_absent_modality_is_the_estimate_from_the_present_ones():
    fusion = tiny_lcr()
    maps = tiny_maps()
    with torch.no_grad():
        correlated = fusion.correlate(fusion.project(maps, MASK > 0))
        zero = torch.zeros(1, 2, 1, 1)
        alphas, delta = coefficients(fusion, 1, zero)  # Γ_1 = MLP_1(0): learned constants
    # sample 0: modalities 0 and 2 present, 1 absent
    estimate = alphas[0][0] * maps[0][0] + alphas[2][0] * maps[2][0] + delta[0]
    torch.testing.assert_close(correlated[1][0], estimate, rtol=0, atol=1e-5)
    # sample 3: only modality 2 present
    torch.testing.assert_close(
        correlated[1][3], alphas[2][0] * maps[2][3] + delta[0], rtol=0, atol=1e-5
    )


def test_lcr_starts_from_the_sum_of_the_present_others():
    fusion = LCRFusion([4, 4, 4])  # α = 1, δ = 0 at initialisation
    maps = [torch.randn(2, 4, 3, 3) for _ in range(3)]
    present = torch.tensor([[True, False, True], [True, True, True]])
    with torch.no_grad():
        correlated = fusion.correlate(fusion.project(maps, present))
    torch.testing.assert_close(correlated[1][0], maps[0][0] + maps[2][0])
    torch.testing.assert_close(correlated[0][0], maps[2][0])
    torch.testing.assert_close(correlated[0][1], maps[1][1] + maps[2][1])


@pytest.mark.parametrize("name", ["mmformer", "lcr"])
def test_one_modality_alone_still_reaches_the_output(name: str):
    """With every modality but one absent the output still follows that one."""
    torch.manual_seed(0)
    kwargs = {"width": 16} if name == "mmformer" else {}
    factory = MMFormerFusion if name == "mmformer" else LCRFusion
    args = ([4, 4], NUM_CLASSES) if name == "mmformer" else ([4, 4],)
    fusion = factory(*args, **kwargs).eval()
    mask = torch.tensor([[1.0, 0.0]])
    maps = [torch.randn(1, 4, 2, 2) for _ in range(2)]
    with torch.no_grad():
        out = fusion(maps, mask)
        other = fusion([maps[0] + 1.0, maps[1]], mask)
    assert not torch.allclose(out, other)


def test_the_fusion_widths_setting_reaches_the_fusion_modules():
    from mmanet.config import build_config
    from mmanet.fusion import configured_fusion

    def built(name: str, widths: str):
        config = build_config(overrides=[f"model.fusion={name}", f"model.{name}.widths={widths}"])
        return configured_fusion(config.model, [32, 48], 3)

    assert built("mmformer", "paper").width == 512
    assert built("mmformer", "small").width == 48  # the widest modality
    paper, small = built("rfnet", "paper"), built("rfnet", "small")
    assert paper.gates[0][0].out_features == 128 and small.gates[0][0].out_features == 16

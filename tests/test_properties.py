"""Property-based tests (hypothesis) of the method's building blocks against docs/method.md.

* modality dropout (#modality-dropout): :class:`mmanet.modality.MaskSampler`.
* MAD (#mad, #segmentation): :func:`mmanet.losses.mad.mad_loss`, sample and pixel
  granularity.
* MAR (#mar): :class:`mmanet.losses.mar.WeakCombinationMiner` and Ω.
* metrics (#metrics): APCER/BPCER/ACER, (m)IoU and confusion matrices.

Every reference value here is recomputed from those definitions with plain Python
loops (float64), never through the library's own helpers.  Random tensor contents come
from a ``torch.Generator`` seeded by hypothesis, so shrinking acts on shapes and seeds.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmanet.losses.mad import mad_loss
from mmanet.losses.mar import WeakCombinationMiner, prediction_discrepancy, weak_masks
from mmanet.metrics import (
    binary_confusion,
    classification_metrics,
    confusion_matrix,
    equal_error_threshold,
    iou_metrics,
)
from mmanet.modality import (
    MaskSampler,
    all_masks,
    drop_one_masks,
    full_mask,
    mask_code,
    mask_codes,
    sub_masks,
)
from mmanet.tasks.segmentation import SegmentationTask

SEEDS = st.integers(min_value=0, max_value=2**31 - 1)
RELATIONS = st.sampled_from(["cosine", "gram"])
WEIGHTINGS = st.sampled_from(["softmax", "linear", "uniform"])
DISTRIBUTIONS = st.sampled_from(["histogram", "softmax"])


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def same_or_both_nan(actual: float, expected: float, rel: float = 1e-9) -> bool:
    if math.isnan(expected):
        return math.isnan(actual)
    return math.isclose(actual, expected, rel_tol=rel, abs_tol=1e-9)


# --------------------------------------------------------------------------------------
# Modality dropout (paper §3.1, docs/method.md#modality-dropout)
# --------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 6),
    batch=st.integers(1, 64),
    seed=SEEDS,
    weighted=st.booleans(),
    data=st.data(),
)
def test_sampled_masks_are_binary_and_never_empty(m, batch, seed, weighted, data):
    """Modality dropout: one 0/1 mask of m bits per sample, never the all-zero mask, whether the
    draw is uniform or uses user-given per-combination probabilities."""
    probabilities = None
    if weighted:
        n = 2**m - 1
        probabilities = data.draw(
            st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).filter(lambda p: sum(p) > 0)
        )
    masks = MaskSampler(m, probabilities).sample(batch, generator(seed))
    assert masks.shape == (batch, m)
    assert ((masks == 0) | (masks == 1)).all()
    assert (masks.sum(dim=1) >= 1).all()


@settings(max_examples=12, deadline=None)
@given(m=st.integers(1, 4), seed=SEEDS)
def test_uniform_sampling_reaches_every_combination_evenly(m, seed):
    """Modality dropout: the uniform draw reaches each of the 2^m - 1 non-empty masks, with
    frequencies close to 1 / (2^m - 1) (a loose ±30 % band: > 6 standard deviations)."""
    combos = 2**m - 1
    draws = 400 * combos
    masks = MaskSampler(m).sample(draws, generator(seed))
    codes = [mask_code(row) for row in masks.long().tolist()]
    counts = {code: codes.count(code) for code in set(codes)}
    assert set(counts) == {mask_code(mask) for mask in all_masks(m)}
    assert 0 not in counts
    for count in counts.values():
        assert abs(count - 400) <= 120


@settings(max_examples=40, deadline=None)
@given(m=st.integers(2, 6), batch=st.integers(1, 50), seed=SEEDS, weighted=st.booleans())
def test_same_seed_replays_the_same_masks(m, batch, seed, weighted):
    """Modality dropout: the draw uses the run's seeded generator, so the same seed replays the same
    masks (for the uniform and the weighted sampler), and consecutive draws continue the
    same stream."""
    probabilities = [float(i + 1) for i in range(2**m - 1)] if weighted else None
    first_gen, second_gen = generator(seed), generator(seed)
    sampler = MaskSampler(m, probabilities)
    first = [sampler.sample(batch, first_gen) for _ in range(3)]
    second = [MaskSampler(m, probabilities).sample(batch, second_gen) for _ in range(3)]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 4), seed=SEEDS, data=st.data())
def test_zero_probability_masks_are_never_drawn(m, seed, data):
    """``method.mask_probabilities``: with user-given probabilities (in ``all_masks`` order),
    a mask whose probability is zero is never drawn, and with enough draws every positive
    one is."""
    n = 2**m - 1
    support = data.draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any))
    weights = data.draw(st.lists(st.floats(0.5, 2.0), min_size=n, max_size=n))
    probabilities = [w if keep else 0.0 for w, keep in zip(weights, support, strict=True)]
    masks = MaskSampler(m, probabilities).sample(2000, generator(seed))
    drawn = set(mask_codes(masks).tolist())
    allowed = {mask_code(mask) for mask, p in zip(all_masks(m), probabilities, strict=True) if p}
    assert drawn <= allowed
    # every allowed mask has probability >= 0.5 / (0.5 + 2 * 14) > 1.7 %: missing one in
    # 2000 draws has probability below 1e-14, so this check cannot fail by chance.
    assert drawn == allowed


# --------------------------------------------------------------------------------------
# MAD (paper Eqs. 2-8, docs/method.md#mad)
# --------------------------------------------------------------------------------------


def brute_force_mad(student, teacher, logits, relation, weighting) -> float:
    """L_MAD of docs/method.md#mad written out in float64 loops (sample granularity)."""
    b = student.shape[0]
    u = student.reshape(b, -1).double().tolist()
    v = teacher.reshape(b, -1).double().tolist()

    def norm(vec):
        return max(math.sqrt(sum(x * x for x in vec)), 1e-8)

    def rel(rows):
        if relation == "cosine":
            unit = [[x / norm(r) for x in r] for r in rows]
            return [[sum(a * c for a, c in zip(p, q, strict=True)) for q in unit] for p in unit]
        gram = [[sum(a * c for a, c in zip(p, q, strict=True)) for q in rows] for p in rows]
        return [[x / norm(r) for x in r] for r in gram]

    r_d, r_t = rel(u), rel(v)
    gaps = [sum((r_t[i][j] - r_d[i][j]) ** 2 for j in range(b)) for i in range(b)]
    entropies = []
    for row in logits.double().reshape(b, logits.shape[1], -1).tolist():
        per_pixel = []
        for pixel in zip(*row, strict=True):  # class values of one pixel
            top = max(pixel)
            z = sum(math.exp(x - top) for x in pixel)
            probs = [math.exp(x - top) / z for x in pixel]
            per_pixel.append(-sum(p * math.log(p) for p in probs if p > 0))
        entropies.append(sum(per_pixel) / len(per_pixel))
    if weighting == "softmax":
        top = max(entropies)
        exps = [math.exp(e - top) for e in entropies]
        weights = [e / sum(exps) for e in exps]
    elif weighting == "linear":
        weights = [e / max(sum(entropies), 1e-8) for e in entropies]
    else:
        weights = [1.0 / b] * b
    return sum(w * g for w, g in zip(weights, gaps, strict=True))


@st.composite
def mad_inputs(draw, min_batch: int = 2, dense: bool = False, sharp: bool = True):
    """(student, teacher, logits) with random shapes: features (b, c, h, w), logits (b, k)
    or, with ``dense``, (b, k, h, w); student and teacher channels may differ.

    ``sharp`` allows logits of scale 10, whose near-zero entropies the library computes in
    fp32 (docs/method.md#mad: computed in fp32); ``"linear"`` weights are ratios of those entropies,
    so comparisons with the float64 reference use ``sharp=False`` (scale at most 2)."""
    b = draw(st.integers(min_batch, 6))
    c_s, c_t = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = draw(st.integers(2, 5))
    scale = draw(st.sampled_from([0.1, 1.0, 2.0, 10.0] if sharp else [0.1, 1.0, 2.0]))
    gen = generator(draw(SEEDS))
    student = torch.randn(b, c_s, h, w, generator=gen)
    teacher = torch.randn(b, c_t, h, w, generator=gen)
    logit_shape = (b, k, h, w) if dense else (b, k)
    logits = scale * torch.randn(*logit_shape, generator=gen)
    return student, teacher, logits


@settings(max_examples=40, deadline=None)
@given(inputs=mad_inputs(min_batch=1, sharp=False), relation=RELATIONS, weighting=WEIGHTINGS)
def test_mad_matches_the_written_out_formula(inputs, relation, weighting):
    """MAD steps 1-6 (Eqs. 2-8): L_MAD = Σ_i w(i) Σ_j (r_t(i,j) - r_d(i,j))², recomputed in
    float64 loops; it is finite and non-negative for any batch size (1 included)."""
    student, teacher, logits = inputs
    loss = mad_loss(student, teacher, logits, relation=relation, weighting=weighting)
    assert loss.shape == ()
    assert torch.isfinite(loss)
    assert loss.item() >= 0.0
    expected = brute_force_mad(student, teacher, logits, relation, weighting)
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(inputs=mad_inputs(), relation=RELATIONS, weighting=WEIGHTINGS)
def test_mad_is_zero_when_student_equals_teacher(inputs, relation, weighting):
    """MAD: identical student and teacher features have identical relation matrices,
    so every gap g(i) and the loss are zero, whatever the weights."""
    student, _, logits = inputs
    loss = mad_loss(student, student.clone(), logits, relation=relation, weighting=weighting)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    inputs=mad_inputs(),
    relation=RELATIONS,
    weighting=WEIGHTINGS,
    seed=SEEDS,
    factor=st.floats(0.1, 10.0),
)
def test_mad_is_invariant_to_positive_scaling(inputs, relation, weighting, seed, factor):
    """MAD step 2 (Eq. 4): both relations are scale-free.  Cosine normalises every row, so a
    per-sample positive rescaling of the student leaves L_MAD unchanged; the row-normalised
    Gram matrix is unchanged by one global positive factor.  Scaling student and teacher
    together by one factor leaves either relation, hence the loss, unchanged."""
    student, teacher, logits = inputs
    base = mad_loss(student, teacher, logits, relation=relation, weighting=weighting).item()
    if relation == "cosine":
        gen = generator(seed)
        per_sample = 0.1 + 9.9 * torch.rand(student.shape[0], 1, 1, 1, generator=gen)
        scaled_student = student * per_sample
    else:
        scaled_student = student * factor
    only_student = mad_loss(
        scaled_student, teacher, logits, relation=relation, weighting=weighting
    ).item()
    both = mad_loss(
        student * factor, teacher * factor, logits, relation=relation, weighting=weighting
    ).item()
    assert only_student == pytest.approx(base, rel=1e-4, abs=1e-5)
    assert both == pytest.approx(base, rel=1e-4, abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(inputs=mad_inputs(), relation=RELATIONS, weighting=WEIGHTINGS, seed=SEEDS)
def test_mad_is_invariant_to_batch_permutation(inputs, relation, weighting, seed):
    """MAD: L_MAD is a weighted sum over samples (rows) of gaps summed over samples
    (columns), with weights attached to rows — so permuting student, teacher and logits
    together leaves it unchanged (this would fail with the column-broadcast weighting
    defect of the authors' code, docs/method.md#departures-from-the-authors-code)."""
    student, teacher, logits = inputs
    perm = torch.randperm(student.shape[0], generator=generator(seed))
    base = mad_loss(student, teacher, logits, relation=relation, weighting=weighting)
    permuted = mad_loss(
        student[perm], teacher[perm], logits[perm], relation=relation, weighting=weighting
    )
    assert permuted.item() == pytest.approx(base.item(), rel=1e-4, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(relation=RELATIONS, weighting=WEIGHTINGS, seed=SEEDS, d=st.integers(1, 64))
def test_mad_batch_of_two_is_finite_and_bounded(relation, weighting, seed, d):
    """MAD with b = 2: finite and non-negative; cosine relations lie in [-1, 1], so each
    g(i) ≤ 2 · 2² = 8 and, with weights summing to one, L_MAD ≤ 8 (the row-normalised Gram
    entries also lie in [-1, 1])."""
    gen = generator(seed)
    student, teacher = torch.randn(2, d, generator=gen), torch.randn(2, d, generator=gen)
    logits = torch.randn(2, 2, generator=gen)
    loss = mad_loss(student, teacher, logits, relation=relation, weighting=weighting).item()
    assert math.isfinite(loss)
    assert 0.0 <= loss <= 8.0 + 1e-5


def brute_force_pixel_mad(student, teacher, logits, relation, weighting) -> float:
    """MAD ``granularity="pixel"`` on unpooled maps: every pixel is a sample (image
    major, then row, column), entropies of the dense logits per pixel."""
    b, _, h, w = student.shape
    to_pixels = lambda maps: maps.permute(0, 2, 3, 1).reshape(b * h * w, -1)  # noqa: E731
    k = logits.shape[1]
    pixel_logits = logits.permute(0, 2, 3, 1).reshape(b * h * w, k)
    return brute_force_mad(
        to_pixels(student), to_pixels(teacher), pixel_logits, relation, weighting
    )


@settings(max_examples=30, deadline=None)
@given(
    inputs=mad_inputs(min_batch=1, dense=True, sharp=False),
    relation=RELATIONS,
    weighting=WEIGHTINGS,
    block_rows=st.one_of(st.none(), st.integers(1, 7)),
)
def test_pixel_mad_matches_the_written_out_formula(inputs, relation, weighting, block_rows):
    """MAD ``granularity="pixel"`` on maps smaller than the 30 x 40 cap (no pooling):
    equals the sample formula with every pixel as a sample, for any row-block size; it is
    finite and non-negative."""
    student, teacher, logits = inputs
    loss = mad_loss(
        student,
        teacher,
        logits,
        relation=relation,
        weighting=weighting,
        granularity="pixel",
        block_rows=block_rows,
    ).item()
    assert math.isfinite(loss)
    assert loss >= 0.0
    expected = brute_force_pixel_mad(student, teacher, logits, relation, weighting)
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)


@settings(max_examples=30, deadline=None)
@given(inputs=mad_inputs(dense=True), relation=RELATIONS, weighting=WEIGHTINGS, seed=SEEDS)
def test_pixel_mad_zero_and_permutation_properties(inputs, relation, weighting, seed):
    """MAD ``granularity="pixel"``: zero when student == teacher, and invariant to
    permuting the images of the batch (which only permutes the pixel-samples)."""
    student, teacher, logits = inputs
    kwargs = {"relation": relation, "weighting": weighting, "granularity": "pixel"}
    same = mad_loss(student, student.clone(), logits, **kwargs).item()
    assert same == pytest.approx(0.0, abs=1e-5)
    perm = torch.randperm(student.shape[0], generator=generator(seed))
    base = mad_loss(student, teacher, logits, **kwargs).item()
    permuted = mad_loss(student[perm], teacher[perm], logits[perm], **kwargs).item()
    assert base >= 0.0
    assert permuted == pytest.approx(base, rel=1e-4, abs=1e-5)


def reference_pixel_mad(student, teacher, logits, relation, weighting) -> torch.Tensor:
    """Differentiable float64 MAD formula on pixel vectors, materialising N x N."""
    k = logits.shape[1]
    u = student.double().permute(0, 2, 3, 1).reshape(-1, student.shape[1])
    v = teacher.double().permute(0, 2, 3, 1).reshape(-1, teacher.shape[1])

    def rel(x):
        if relation == "cosine":
            unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)
            return unit @ unit.T
        gram = x @ x.T
        return gram / gram.norm(dim=1, keepdim=True).clamp_min(1e-8)

    gap = (rel(v) - rel(u)).pow(2).sum(dim=1)
    p = torch.softmax(logits.double().permute(0, 2, 3, 1).reshape(-1, k), dim=1)
    entropy = -(p * p.log()).sum(dim=1)
    weights = {
        "softmax": torch.softmax(entropy, dim=0),
        "linear": entropy / entropy.sum(),
        "uniform": torch.full_like(entropy, 1.0 / entropy.numel()),
    }[weighting]
    return (weights * gap).sum()


@settings(max_examples=30, deadline=None)
@given(
    inputs=mad_inputs(min_batch=1, dense=True, sharp=False),
    relation=RELATIONS,
    weighting=WEIGHTINGS,
    block_rows=st.one_of(st.none(), st.integers(1, 7)),
)
def test_pixel_mad_gradient_matches_the_materialised_formula(
    inputs, relation, weighting, block_rows
):
    """MAD ``granularity="pixel"`` computes the gaps in row blocks with a hand-written
    (cosine) or checkpointed (gram) backward: its gradient with respect to the student
    features equals autograd through the materialised N x N formula, for any block size;
    the teacher is detached (no gradient)."""
    student, teacher, logits = inputs
    student = student.clone().requires_grad_(True)
    teacher = teacher.clone().requires_grad_(True)
    loss = mad_loss(
        student,
        teacher,
        logits,
        relation=relation,
        weighting=weighting,
        granularity="pixel",
        block_rows=block_rows,
    )
    loss.backward()
    assert teacher.grad is None
    reference_student = student.detach().clone().requires_grad_(True)
    reference = reference_pixel_mad(
        reference_student, teacher.detach(), logits, relation, weighting
    )
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-4, abs=1e-5)
    torch.testing.assert_close(
        student.grad.double(), reference_student.grad.double(), rtol=1e-3, atol=1e-4
    )


@settings(max_examples=30, deadline=None)
@given(
    inputs=mad_inputs(dense=True, sharp=False),
    relation=RELATIONS,
    weighting=WEIGHTINGS,
    pool=st.tuples(st.integers(1, 3), st.integers(1, 3)),
)
def test_pixel_mad_pools_features_and_logits_alike(inputs, relation, weighting, pool):
    """MAD ``granularity="pixel"`` on a pooled grid: the loss with ``pool=(ph, pw)``
    equals the loss on features and logits adaptive-average-pooled to (ph, pw) first."""
    student, teacher, logits = inputs
    kwargs = {"relation": relation, "weighting": weighting, "granularity": "pixel"}
    pooled = mad_loss(student, teacher, logits, pool=pool, **kwargs).item()

    def avg(x):
        return torch.nn.functional.adaptive_avg_pool2d(x, pool)

    expected = mad_loss(avg(student), avg(teacher), avg(logits), **kwargs).item()
    assert pooled == pytest.approx(expected, rel=1e-4, abs=1e-5)


# --------------------------------------------------------------------------------------
# MAR mining (paper Eqs. 9-13, docs/method.md#mar)
# --------------------------------------------------------------------------------------


def brute_force_discrepancy(counts: list[list[int]], distribution: str) -> list[float]:
    """MAR mining steps 2-3 (Eqs. 10-12): add-one-smoothed histograms (optionally
    softmaxed), KL(P_0 ‖ P_i)."""

    def dist(row):
        smoothed = [c + 1.0 for c in row]
        probs = [s / sum(smoothed) for s in smoothed]
        if distribution == "softmax":
            exps = [math.exp(p) for p in probs]
            probs = [e / sum(exps) for e in exps]
        return probs

    full = dist(counts[0])
    return [
        sum(p * math.log(p / q) for p, q in zip(full, dist(row), strict=True)) for row in counts[1:]
    ]


def is_down_set(masks: list[tuple[int, ...]]) -> bool:
    members = set(masks)
    return all(set(sub_masks(mask)) <= members for mask in masks)


@st.composite
def mining_histories(draw):
    """(m, k, N, per-epoch (m + 1, k) predicted-label counts) for N warm-up epochs."""
    m = draw(st.integers(2, 5))
    k = draw(st.integers(2, 6))
    warmup = draw(st.integers(1, 5))
    row = st.lists(st.integers(0, 50), min_size=k, max_size=k)
    epochs = st.lists(row, min_size=m + 1, max_size=m + 1)
    history = draw(st.lists(epochs, min_size=warmup, max_size=warmup))
    return m, k, warmup, history


@settings(max_examples=60, deadline=None)
@given(history=mining_histories(), distribution=DISTRIBUTIONS)
def test_miner_fixes_the_down_set_of_the_weakest_drop_one_mask(history, distribution):
    """MAR: fed one (m + 1, k) histogram per warm-up epoch as the trainer's ``mine``
    does, the miner stores g = KL(P_0 ‖ P_i) as row e of the memory bank, leaves Ω unset
    until epoch N, then fixes Ω = sub_masks(Δ_w) with w = argmax of the mean g (recomputed
    here from the counts in float64).  Ω is non-empty, a down-set (every subset of a member
    is a member), never contains the full mask, has 2^(m-1) - 1 members and stays fixed:
    no further mining after epoch N."""
    m, _, warmup, epochs = history
    miner = WeakCombinationMiner(m, warmup, distribution=distribution)
    expected_rows = []
    for epoch in range(1, warmup + 3):
        if not miner.needs_mining(epoch):
            assert epoch > warmup
            continue
        counts = torch.tensor(epochs[epoch - 1])
        g = miner.update(epoch, counts)
        expected_rows.append(brute_force_discrepancy(epochs[epoch - 1], distribution))
        assert g.tolist() == pytest.approx(expected_rows[-1], rel=1e-5, abs=1e-6)
        assert (miner.omega is None) == (epoch < warmup)
    assert miner.filled == warmup
    assert miner.memory_bank.tolist() == pytest.approx(
        [pytest.approx(row, rel=1e-5, abs=1e-6) for row in expected_rows]
    )

    omega = miner.omega
    assert omega
    assert full_mask(m) not in omega
    assert set(omega) <= set(all_masks(m))
    assert len(set(omega)) == len(omega) == 2 ** (m - 1) - 1
    assert is_down_set(omega)

    means = [sum(col) / warmup for col in zip(*expected_rows, strict=True)]
    # near-ties (float32 memory bank vs this float64 recomputation) may go either way
    candidates = [i for i, g in enumerate(means) if g >= max(means) - 1e-5 * (1 + max(means))]
    drop_one = drop_one_masks(m)
    assert any(omega == sub_masks(drop_one[i]) for i in candidates)
    assert sum(set(omega) == set(sub_masks(d)) for d in drop_one) == 1

    lookup = miner.omega_lookup()
    assert lookup is not None
    assert {code for code in range(2**m) if lookup[code]} == {mask_code(x) for x in omega}


@settings(max_examples=40, deadline=None)
@given(history=mining_histories(), distribution=DISTRIBUTIONS, stop=st.integers(1, 5))
def test_miner_resumes_from_its_state(history, distribution, stop):
    """MAR with a resumed run: saving the miner after any warm-up epoch and loading the
    state into a fresh miner gives the same memory bank and the same Ω at the end."""
    m, _, warmup, epochs = history
    stop = min(stop, warmup)
    straight = WeakCombinationMiner(m, warmup, distribution=distribution)
    for epoch in range(1, warmup + 1):
        straight.update(epoch, torch.tensor(epochs[epoch - 1]))
    first = WeakCombinationMiner(m, warmup, distribution=distribution)
    for epoch in range(1, stop + 1):
        first.update(epoch, torch.tensor(epochs[epoch - 1]))
    resumed = WeakCombinationMiner(m, warmup, distribution=distribution)
    resumed.load_state_dict(first.state_dict())
    for epoch in range(stop + 1, warmup + 1):
        assert resumed.needs_mining(epoch)
        resumed.update(epoch, torch.tensor(epochs[epoch - 1]))
    assert torch.equal(resumed.memory_bank, straight.memory_bank)
    assert resumed.omega == straight.omega


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(2, 5),
    k=st.integers(2, 6),
    n=st.integers(1, 40),
    seed=SEEDS,
    distribution=DISTRIBUTIONS,
)
def test_prediction_discrepancy_from_labels(m, k, n, seed, distribution):
    """MAR mining steps 2-3 (Eqs. 10-12) from predicted labels: histograms with k bins (empty bins
    included), g(i) = KL(P_0 ‖ P_i) ≥ 0, and g(i) = 0 when Δ_i predicts like Δ_0."""
    gen = generator(seed)
    full = torch.randint(k, (n,), generator=gen)
    dropped = [torch.randint(k, (n,), generator=gen) for _ in range(m)]
    dropped[0] = full.clone()
    g = prediction_discrepancy(full, dropped, k, distribution)
    counts = [[int((p == c).sum()) for c in range(k)] for p in [full, *dropped]]
    assert g.shape == (m,)
    assert g.tolist() == pytest.approx(
        brute_force_discrepancy(counts, distribution), rel=1e-5, abs=1e-6
    )
    assert (g >= -1e-7).all()
    assert g[0].item() == pytest.approx(0.0, abs=1e-7)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), m=st.integers(2, 6), seed=SEEDS)
def test_weak_masks_is_the_down_set_of_the_argmax(rows, m, seed):
    """MAR's Ω (Eq. 13): for any memory bank, Ω is sub_masks of the drop-one mask of
    the column with the largest mean."""
    bank = torch.rand(rows, m, generator=generator(seed), dtype=torch.float64)
    means = [sum(bank[:, i].tolist()) / rows for i in range(m)]
    weakest = max(range(m), key=lambda i: means[i])
    omega = weak_masks(bank)
    assert omega == sub_masks(drop_one_masks(m)[weakest])
    assert is_down_set(omega) and full_mask(m) not in omega
    # brute force Ω from the definition: non-empty masks with modality `weakest` absent
    expected = {mask for mask in itertools.product((0, 1), repeat=m) if any(mask)}
    expected = {mask for mask in expected if mask[weakest] == 0}
    assert set(omega) == expected


# --------------------------------------------------------------------------------------
# Metrics (docs/method.md#metrics)
# --------------------------------------------------------------------------------------


def confusions(k_min: int = 2, k_max: int = 6):
    """Square confusion matrices of small non-negative counts (zero rows/columns likely)."""
    return st.integers(k_min, k_max).flatmap(
        lambda k: arrays(np.int64, (k, k), elements=st.integers(0, 20))
    )


@settings(max_examples=80, deadline=None)
@given(confusion=confusions(2, 2), bona_fide=st.integers(0, 1))
def test_apcer_bpcer_acer_from_definitions(confusion, bona_fide):
    """Metrics (ISO/IEC 30107-3), rows = true class, columns = predicted, ``bona_fide_class``
    = the index of the bona fide class: APCER = % of attack samples predicted bona fide,
    BPCER = % of bona fide samples predicted attack, ACER = their mean; a rate over an
    empty class is NaN.  Accuracy and error are complementary percentages."""
    metrics = classification_metrics(torch.from_numpy(confusion), bona_fide)
    attack = 1 - bona_fide
    n_attack = int(confusion[attack].sum())
    n_bona = int(confusion[bona_fide].sum())
    apcer = 100.0 * int(confusion[attack, bona_fide]) / n_attack if n_attack else math.nan
    bpcer = 100.0 * int(confusion[bona_fide, attack]) / n_bona if n_bona else math.nan
    acer = (apcer + bpcer) / 2
    assert same_or_both_nan(metrics["apcer"], apcer)
    assert same_or_both_nan(metrics["bpcer"], bpcer)
    assert same_or_both_nan(metrics["acer"], acer)
    total = int(confusion.sum())
    accuracy = 100.0 * int(np.trace(confusion)) / total if total else math.nan
    assert same_or_both_nan(metrics["accuracy"], accuracy)
    if total:
        assert metrics["accuracy"] + metrics["error"] == pytest.approx(100.0)


@settings(max_examples=30, deadline=None)
@given(confusion=confusions(3, 6), bona_fide=st.integers(0, 1))
def test_presentation_attack_rates_need_two_classes(confusion, bona_fide):
    """Metrics: APCER/BPCER are two-class rates; more classes are refused, while the
    accuracy of a k-class confusion is still the share of its diagonal."""
    with pytest.raises(ValueError):
        classification_metrics(torch.from_numpy(confusion), bona_fide)
    metrics = classification_metrics(torch.from_numpy(confusion))
    total = int(confusion.sum())
    expected = 100.0 * int(np.trace(confusion)) / total if total else math.nan
    assert same_or_both_nan(metrics["accuracy"], expected)


@settings(max_examples=80, deadline=None)
@given(confusion=confusions())
def test_iou_from_definitions(confusion):
    """Segmentation metrics: IoU_c = TP / (TP + FP + FN) in %, from one confusion; a class
    absent from both truth and prediction (TP + FP + FN = 0) gets NaN and is left out of
    mIoU; mIoU is NaN when no class is present.  Pixel accuracy = trace / total."""
    k = confusion.shape[0]
    metrics = iou_metrics(torch.from_numpy(confusion))
    per_class = []
    for c in range(k):
        tp = int(confusion[c, c])
        fp = sum(int(confusion[t, c]) for t in range(k) if t != c)
        fn = sum(int(confusion[c, p]) for p in range(k) if p != c)
        per_class.append(100.0 * tp / (tp + fp + fn) if tp + fp + fn else math.nan)
    present = [v for v in per_class if not math.isnan(v)]
    miou = sum(present) / len(present) if present else math.nan
    assert len(metrics["per_class_iou"]) == k
    for actual, expected in zip(metrics["per_class_iou"], per_class, strict=True):
        assert same_or_both_nan(actual, expected)
    assert same_or_both_nan(metrics["miou"], miou)
    total = int(confusion.sum())
    accuracy = 100.0 * int(np.trace(confusion)) / total if total else math.nan
    assert same_or_both_nan(metrics["pixel_accuracy"], accuracy)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 6),
    n=st.integers(0, 60),
    seed=SEEDS,
    ignore=st.floats(0.0, 0.5),
)
def test_confusion_matrices_count_true_rows_predicted_columns(k, n, seed, ignore):
    """Metrics: entry (t, p) counts samples of true class t predicted as p; the segmentation
    confusion leaves out void pixels (``ignore_index``) and accepts maps of any shape."""
    gen = generator(seed)
    labels = torch.randint(k, (n,), generator=gen)
    preds = torch.randint(k, (n,), generator=gen)
    expected = [[0] * k for _ in range(k)]
    for t, p in zip(labels.tolist(), preds.tolist(), strict=True):
        expected[t][p] += 1
    assert confusion_matrix(preds, labels, k).tolist() == expected

    void = torch.rand(n, generator=gen) < ignore
    seg_labels = torch.where(void, torch.full_like(labels, 255), labels)
    seg_expected = [[0] * k for _ in range(k)]
    for t, p in zip(seg_labels.tolist(), preds.tolist(), strict=True):
        if t != 255:
            seg_expected[t][p] += 1
    if n % 2 == 0 and n:  # any shape: a (2, n / 2) map
        seg_labels, preds = seg_labels.reshape(2, -1), preds.reshape(2, -1)
    task = SegmentationTask([str(c) for c in range(k)], ignore_index=255)
    assert task.confusion(preds, seg_labels).tolist() == seg_expected


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 40), seed=SEEDS, bona_fide=st.integers(0, 1), data=st.data())
def test_decision_threshold_and_equal_error_threshold(n, seed, bona_fide, data):
    """Metrics, at the 0.5 decision threshold: a sample is accepted as bona fide iff its
    bona fide score ≥ the threshold.  The equal-error threshold is the observed score that
    minimises |APCER − BPCER| (ties: the lowest such score), checked by brute force."""
    gen = generator(seed)
    # coarse scores so that ties between scores (and between thresholds) happen
    scores = torch.randint(0, 11, (n,), generator=gen).double() / 10
    labels = torch.randint(2, (n,), generator=gen)
    threshold = data.draw(st.sampled_from([0.5, *scores.tolist()]))
    confusion = binary_confusion(scores, labels, bona_fide, threshold)
    expected = [[0, 0], [0, 0]]
    for s, t in zip(scores.tolist(), labels.tolist(), strict=True):
        expected[t][bona_fide if s >= threshold else 1 - bona_fide] += 1
    assert confusion.tolist() == expected

    bona = [s for s, t in zip(scores.tolist(), labels.tolist(), strict=True) if t == bona_fide]
    attacks = [s for s, t in zip(scores.tolist(), labels.tolist(), strict=True) if t != bona_fide]
    if not bona or not attacks:
        with pytest.raises(ValueError):
            equal_error_threshold(scores, labels, bona_fide)
        return
    # exact rational rates: the set of thresholds whose |APCER - BPCER| is minimal
    gaps = {}
    for candidate in sorted(set(scores.tolist())):
        apcer = Fraction(sum(s >= candidate for s in attacks), len(attacks))
        bpcer = Fraction(sum(s < candidate for s in bona), len(bona))
        gaps[candidate] = abs(apcer - bpcer)
    minimal = [c for c, gap in gaps.items() if gap == min(gaps.values())]
    assert equal_error_threshold(scores, labels, bona_fide) == min(minimal)  # ties: the lower


def test_equal_error_threshold_exact_tie_prefers_the_lower_threshold():
    """``equal_error_threshold`` docstring ('ties: the lower threshold').  Bona fide
    (class 0) scores 0.4, 0.8, 0.1, attack scores 0.2, 0.5: at t = 0.4 APCER = 1/2 and
    BPCER = 1/3, at t = 0.5 APCER = 1/2 and BPCER = 2/3 — both |APCER − BPCER| = 1/6
    exactly, so the documented tie rule picks 0.4 (float rates would round 0.5 − 1/3 above
    2/3 − 0.5 and pick 0.5; the function compares exact integer cross-products)."""
    scores = torch.tensor([0.2, 0.4, 0.8, 0.1, 0.5], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 0, 1])
    assert equal_error_threshold(scores, labels, 0) == pytest.approx(0.4)

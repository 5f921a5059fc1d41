"""MAR and its SR ablation (paper Eqs. 9-16, docs/method.md#mar): discrepancies, Ω and the
miner."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmanet.losses.mar import (
    WeakCombinationMiner,
    discrepancy_from_counts,
    prediction_discrepancy,
    prediction_histogram,
    weak_masks,
)
from mmanet.modality import drop_one_masks, mask_code, mask_codes, sub_masks


def kl(p: list[float], q: list[float]) -> float:
    """KL(p || q) written out."""
    return sum(pc * math.log(pc / qc) for pc, qc in zip(p, q, strict=True))


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def t(values, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# Three classes, three modalities. Predicted labels and their add-one-smoothed histograms:
FULL = [0, 0, 1, 2]  # counts [2, 1, 1] -> P_0 = [3, 2, 2] / 7
DROPPED = [
    [0, 0, 0, 0],  # counts [4, 0, 0] -> P_1 = [5, 1, 1] / 7
    [2, 1, 0, 0],  # counts [2, 1, 1] -> P_2 = P_0
    [1, 1, 1, 1],  # counts [0, 4, 0] -> P_3 = [1, 5, 1] / 7
]
P_FULL = [3 / 7, 2 / 7, 2 / 7]
P_DROPPED = [[5 / 7, 1 / 7, 1 / 7], [3 / 7, 2 / 7, 2 / 7], [1 / 7, 5 / 7, 1 / 7]]


# ---------------------------------------------------------------- discrepancy


def test_prediction_histogram_hand_case():
    torch.testing.assert_close(
        prediction_histogram(torch.tensor(FULL), 3), t(P_FULL, torch.float64)
    )
    # a class that is never predicted still gets one count
    torch.testing.assert_close(
        prediction_histogram(torch.tensor(FULL), 4), t([3 / 8, 2 / 8, 2 / 8, 1 / 8], torch.float64)
    )


def test_prediction_histogram_softmax_option():
    expected = softmax(P_FULL)
    torch.testing.assert_close(
        prediction_histogram(torch.tensor(FULL), 3, "softmax"), t(expected, torch.float64)
    )


def test_prediction_discrepancy_hand_case():
    expected = [
        3 / 7 * math.log(3 / 5) + 2 / 7 * math.log(2 / 1) + 2 / 7 * math.log(2 / 1),
        0.0,
        3 / 7 * math.log(3 / 1) + 2 / 7 * math.log(2 / 5) + 2 / 7 * math.log(2 / 1),
    ]
    g = prediction_discrepancy(torch.tensor(FULL), [torch.tensor(p) for p in DROPPED], 3)
    assert g.shape == (3,)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, t(expected), rtol=1e-6, atol=1e-7)
    # the same numbers through the KL helper
    torch.testing.assert_close(g, t([kl(P_FULL, q) for q in P_DROPPED]), rtol=1e-6, atol=1e-7)


def test_prediction_discrepancy_is_the_forward_kl_from_the_full_mask():
    # KL(P_0 || P_i), not KL(P_i || P_0): the two differ on this case
    g = prediction_discrepancy(torch.tensor(FULL), [torch.tensor(DROPPED[0])], 3)
    assert g.item() == pytest.approx(kl(P_FULL, P_DROPPED[0]), rel=1e-6)
    assert abs(kl(P_FULL, P_DROPPED[0]) - kl(P_DROPPED[0], P_FULL)) > 1e-2


def test_prediction_discrepancy_softmax_option():
    full = softmax(P_FULL)
    expected = [kl(full, softmax(q)) for q in P_DROPPED]
    g = prediction_discrepancy(
        torch.tensor(FULL), [torch.tensor(p) for p in DROPPED], 3, distribution="softmax"
    )
    torch.testing.assert_close(g, t(expected), rtol=1e-5, atol=1e-7)
    # the softmax flattens the distributions: a smaller discrepancy than the histogram one
    plain = prediction_discrepancy(torch.tensor(FULL), [torch.tensor(p) for p in DROPPED], 3)
    assert g[0] < plain[0]


def test_prediction_discrepancy_length_is_number_of_modalities():
    two = prediction_discrepancy(torch.tensor(FULL), [torch.tensor(p) for p in DROPPED[:2]], 3)
    assert two.shape == (2,)
    six = prediction_discrepancy(torch.tensor(FULL), [torch.tensor(FULL)] * 6, 3)
    assert six.shape == (6,)
    torch.testing.assert_close(six, torch.zeros(6))


def test_prediction_discrepancy_counts_every_pixel():
    # segmentation: label maps of any shape count every element
    full = torch.tensor(FULL).reshape(2, 2)
    dropped = [torch.tensor(p).reshape(1, 2, 2) for p in DROPPED]
    flat = prediction_discrepancy(torch.tensor(FULL), [torch.tensor(p) for p in DROPPED], 3)
    torch.testing.assert_close(prediction_discrepancy(full, dropped, 3), flat)


def test_discrepancy_from_counts_hand_case():
    counts = torch.tensor([[2, 1, 1], [4, 0, 0], [2, 1, 1], [0, 4, 0]])
    expected = [kl(P_FULL, q) for q in P_DROPPED]
    torch.testing.assert_close(discrepancy_from_counts(counts), t(expected), rtol=1e-6, atol=1e-7)


def test_unknown_distribution_raises():
    with pytest.raises(ValueError, match="distribution"):
        prediction_histogram(torch.tensor(FULL), 3, "argmax")


# ---------------------------------------------------------------- Ω from the memory bank


def test_weak_masks_two_modalities_is_one_singleton():
    bank = t([[0.1, 0.5], [0.2, 0.3]])  # mean [0.15, 0.4]: modality 1 is the weakest to drop
    assert weak_masks(bank) == [(1, 0)]
    assert weak_masks(t([[0.9, 0.5]])) == [(0, 1)]


def test_weak_masks_three_modalities_is_the_weak_pair_and_its_singletons():
    bank = t([[0.7, 0.1, 0.2], [0.5, 0.3, 0.1], [0.6, 0.0, 0.0]])  # argmax of mean: 0
    assert weak_masks(bank) == [(0, 1, 0), (0, 0, 1), (0, 1, 1)]
    bank = t([[0.1, 0.2, 0.9]])  # argmax: 2 -> pair rgb+depth
    assert weak_masks(bank) == [(1, 0, 0), (0, 1, 0), (1, 1, 0)]


def test_weak_masks_average_over_the_rows():
    # row-wise argmaxes are 0 and 1, the first/last/max-over-rows readings give 0 or 1,
    # only the mean of the rows ([0.5, 0.5, 0.6]) points at modality 2
    bank = t([[1.0, 0.0, 0.6], [0.0, 1.0, 0.6]])
    assert [int(row.argmax()) for row in bank] == [0, 1]
    assert weak_masks(bank) == [(1, 0, 0), (0, 1, 0), (1, 1, 0)]


@pytest.mark.parametrize("shape", [(3,), (0, 3), (2, 1), (1, 2, 3)])
def test_weak_masks_rejects_bad_banks(shape):
    with pytest.raises(ValueError):
        weak_masks(torch.zeros(shape))


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    rows=st.integers(1, 5),
    m=st.integers(2, 5),
)
def test_weak_masks_is_a_down_set_under_one_drop_one_mask(data, rows, m):
    bank = data.draw(
        arrays(np.float32, (rows, m), elements=st.floats(0, 10, allow_nan=False, width=32))
    )
    omega = weak_masks(torch.from_numpy(bank))
    assert omega
    assert len(set(omega)) == len(omega)
    assert all(len(mask) == m and any(mask) for mask in omega)
    covering = [
        drop
        for drop in drop_one_masks(m)
        if all(all(a <= b for a, b in zip(mask, drop, strict=True)) for mask in omega)
    ]
    assert len(covering) == 1
    assert covering[0] in omega
    assert len(omega) == 2 ** (m - 1) - 1
    # the dropped modality has the largest mean discrepancy
    dropped = covering[0].index(0)
    means = bank.astype(np.float64).mean(axis=0)
    assert means[dropped] >= means.max() - 1e-5 * max(1.0, means.max())
    # a down-set: removing any present modality (staying non-empty) stays in Ω
    members = set(omega)
    for mask in omega:
        for i, bit in enumerate(mask):
            smaller = tuple(0 if j == i else b for j, b in enumerate(mask))
            if bit and any(smaller):
                assert smaller in members


# ---------------------------------------------------------------- the miner

# Two classes, three modalities; rows: full mask, then modality 0, 1, 2 dropped.
FULL_COUNTS = [5, 5]  # -> [6, 6] / 12 = [1/2, 1/2]
# modality 1 matters most: g = [0, KL(1/2 || [11, 1]/12), KL(1/2 || [7, 5]/12)]
COUNTS_WEAK_1 = torch.tensor([FULL_COUNTS, [5, 5], [10, 0], [6, 4]])
G_WEAK_1 = [
    0.0,
    0.5 * math.log(0.5 / (11 / 12)) + 0.5 * math.log(0.5 / (1 / 12)),
    0.5 * math.log(0.5 / (7 / 12)) + 0.5 * math.log(0.5 / (5 / 12)),
]
# modality 0 matters a little: g = [KL(1/2 || [7, 5]/12), 0, 0]
COUNTS_WEAK_0 = torch.tensor([FULL_COUNTS, [6, 4], [5, 5], [5, 5]])
G_WEAK_0 = [0.5 * math.log(0.5 / (7 / 12)) + 0.5 * math.log(0.5 / (5 / 12)), 0.0, 0.0]


def test_miner_schedule_and_memory_bank():
    miner = WeakCombinationMiner(3, warmup_epochs=3)
    assert miner.memory_bank.shape == (3, 3)
    assert [miner.needs_mining(e) for e in (1, 2, 3, 4, 10)] == [True, True, True, False, False]
    assert miner.omega is None
    assert miner.omega_lookup() is None

    g = miner.update(1, COUNTS_WEAK_1)
    torch.testing.assert_close(g, t(G_WEAK_1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(miner.memory_bank[0], t(G_WEAK_1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(miner.memory_bank[1:], torch.zeros(2, 3))
    assert miner.filled == 1
    assert miner.omega is None
    assert miner.needs_mining(2)

    miner.update(2, COUNTS_WEAK_0)
    assert miner.omega is None
    assert miner.needs_mining(3)

    miner.update(3, COUNTS_WEAK_0)
    torch.testing.assert_close(
        miner.memory_bank, t([G_WEAK_1, G_WEAK_0, G_WEAK_0]), rtol=1e-6, atol=1e-7
    )
    assert miner.filled == 3
    # column means ~ [0.0094, 0.1976, 0.0047]: modality 1 is dropped,
    # although the last two epochs alone would pick modality 0
    assert miner.omega == [(1, 0, 0), (0, 0, 1), (1, 0, 1)]
    assert not any(miner.needs_mining(e) for e in (1, 2, 3, 4))


def test_miner_single_warmup_epoch_fixes_omega_at_once():
    miner = WeakCombinationMiner(3, warmup_epochs=1)
    assert miner.needs_mining(1)
    miner.update(1, COUNTS_WEAK_0)
    assert miner.omega == sub_masks((0, 1, 1))
    assert not miner.needs_mining(2)


def test_miner_softmax_distribution():
    miner = WeakCombinationMiner(3, warmup_epochs=2, distribution="softmax")
    full = softmax([0.5, 0.5])
    expected = [kl(full, softmax(q)) for q in ([0.5, 0.5], [11 / 12, 1 / 12], [7 / 12, 5 / 12])]
    torch.testing.assert_close(miner.update(1, COUNTS_WEAK_1), t(expected), rtol=1e-5, atol=1e-7)


def test_miner_sr_mode_fixes_the_singletons_immediately():
    miner = WeakCombinationMiner(3, warmup_epochs=5, mode="sr")
    assert miner.omega == [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    assert not miner.needs_mining(1)
    lookup = miner.omega_lookup()
    assert lookup is not None
    assert lookup.dtype == torch.bool
    assert lookup.shape == (8,)
    assert [i for i in range(8) if lookup[i]] == [1, 2, 4]


def test_miner_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        WeakCombinationMiner(3, warmup_epochs=5, mode="random")


def test_omega_lookup_selects_the_samples_in_omega():
    miner = WeakCombinationMiner(3, warmup_epochs=1)
    miner.update(1, COUNTS_WEAK_1)  # Ω = rgb, ir, rgb+ir
    lookup = miner.omega_lookup()
    assert lookup is not None
    assert [i for i in range(8) if lookup[i]] == sorted(mask_code(m) for m in miner.omega)
    assert [i for i in range(8) if lookup[i]] == [1, 4, 5]
    batch = t([[1, 0, 0], [1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    assert lookup[mask_codes(batch)].tolist() == [True, False, True, False, True, False]


def test_miner_state_dict_round_trip_after_mining():
    miner = WeakCombinationMiner(3, warmup_epochs=2)
    miner.update(1, COUNTS_WEAK_1)
    miner.update(2, COUNTS_WEAK_0)
    buffer = io.BytesIO()
    torch.save(miner.state_dict(), buffer)
    buffer.seek(0)
    restored = WeakCombinationMiner(3, warmup_epochs=2)
    restored.load_state_dict(torch.load(buffer))
    assert torch.equal(restored.memory_bank, miner.memory_bank)
    assert restored.filled == 2
    assert restored.omega == miner.omega
    assert all(isinstance(mask, tuple) for mask in restored.omega)
    assert not restored.needs_mining(1)
    assert torch.equal(restored.omega_lookup(), miner.omega_lookup())


def test_miner_state_dict_round_trip_mid_warmup():
    miner = WeakCombinationMiner(3, warmup_epochs=3)
    miner.update(1, COUNTS_WEAK_1)
    state = miner.state_dict()
    assert state["omega"] is None
    assert state["filled"] == 1
    restored = WeakCombinationMiner(3, warmup_epochs=3)
    restored.load_state_dict(state)
    assert restored.omega is None
    assert restored.needs_mining(2)
    # resuming gives the same Ω as never stopping
    for m in (miner, restored):
        m.update(2, COUNTS_WEAK_0)
        m.update(3, COUNTS_WEAK_0)
    assert restored.omega == miner.omega == [(1, 0, 0), (0, 0, 1), (1, 0, 1)]
    assert torch.equal(restored.memory_bank, miner.memory_bank)


def test_miner_state_dict_is_a_copy():
    miner = WeakCombinationMiner(3, warmup_epochs=2)
    miner.update(1, COUNTS_WEAK_1)
    state = miner.state_dict()
    state["memory_bank"].fill_(123.0)
    assert miner.memory_bank.max().item() < 1.0
    restored = WeakCombinationMiner(3, warmup_epochs=2)
    restored.load_state_dict(miner.state_dict())
    restored.memory_bank.fill_(7.0)
    assert miner.memory_bank.max().item() < 1.0

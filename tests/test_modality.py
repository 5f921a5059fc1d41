"""Masks, combinations and modality dropout (paper §3.1, docs/method.md#modality-dropout)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmanet.modality import (
    MaskSampler,
    Modalities,
    all_masks,
    drop_one_masks,
    full_mask,
    mask_code,
    mask_codes,
    singleton_masks,
    sub_masks,
)

RGB_DEPTH_IR = Modalities(["rgb", "depth", "ir"])


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rows(masks: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(int(bit) for bit in row) for row in masks.tolist()]


# ---------------------------------------------------------------- combinations


def test_all_masks_order_two_modalities():
    assert all_masks(2) == [(1, 0), (0, 1), (1, 1)]


def test_all_masks_order_three_modalities():
    assert all_masks(3) == [
        (1, 0, 0),
        (0, 1, 0),
        (0, 0, 1),
        (1, 1, 0),
        (1, 0, 1),
        (0, 1, 1),
        (1, 1, 1),
    ]


def test_all_masks_one_modality():
    assert all_masks(1) == [(1,)]


@pytest.mark.parametrize("m", [0, -1])
def test_all_masks_rejects_no_modality(m):
    with pytest.raises(ValueError):
        all_masks(m)


@pytest.mark.parametrize("m", [2, 3, 4, 5, 6])
def test_all_masks_count_and_content(m):
    masks = all_masks(m)
    assert len(masks) == 2**m - 1
    assert len(set(masks)) == len(masks)
    assert all(len(mask) == m and set(mask) <= {0, 1} and any(mask) for mask in masks)
    sizes = [sum(mask) for mask in masks]
    assert sizes == sorted(sizes)  # by number of present modalities
    assert masks[-1] == full_mask(m)


def test_full_drop_one_and_singleton_masks():
    assert full_mask(3) == (1, 1, 1)
    assert drop_one_masks(3) == [(0, 1, 1), (1, 0, 1), (1, 1, 0)]
    assert drop_one_masks(2) == [(0, 1), (1, 0)]
    assert singleton_masks(3) == [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    assert singleton_masks(2) == [(1, 0), (0, 1)]


def test_sub_masks():
    assert sub_masks((1, 1, 0)) == [(1, 0, 0), (0, 1, 0), (1, 1, 0)]
    assert sub_masks((0, 1, 1)) == [(0, 1, 0), (0, 0, 1), (0, 1, 1)]
    assert sub_masks((0, 0, 1)) == [(0, 0, 1)]
    assert sub_masks((1, 1, 1)) == all_masks(3)
    assert sub_masks((1, 0)) == [(1, 0)]


def test_mask_code():
    assert mask_code((1, 0, 0)) == 1
    assert mask_code((0, 1, 0)) == 2
    assert mask_code((0, 0, 1)) == 4
    assert mask_code((1, 0, 1)) == 5
    assert mask_code((1, 1, 1)) == 7
    assert mask_code([0, 1]) == 2


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6])
def test_mask_codes_are_a_bijection_onto_nonzero_codes(m):
    codes = [mask_code(mask) for mask in all_masks(m)]
    assert sorted(codes) == list(range(1, 2**m))


def test_mask_codes_tensor():
    masks = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.float32)
    assert mask_codes(masks).tolist() == [1, 6, 7, 4]
    assert mask_codes(masks).dtype == torch.int64


def test_mask_codes_agree_with_mask_code():
    masks = all_masks(4)
    codes = mask_codes(torch.tensor(masks, dtype=torch.float32))
    assert codes.tolist() == [mask_code(mask) for mask in masks]


# ---------------------------------------------------------------- names


def test_mask_name():
    assert RGB_DEPTH_IR.mask_name((1, 0, 1)) == "rgb+ir"
    assert RGB_DEPTH_IR.mask_name((0, 1, 0)) == "depth"
    assert RGB_DEPTH_IR.mask_name((1, 1, 1)) == "rgb+depth+ir"


def test_mask_names_of_combinations_follow_table_order():
    names = [RGB_DEPTH_IR.mask_name(mask) for mask in RGB_DEPTH_IR.combinations]
    assert names == ["rgb", "depth", "ir", "rgb+depth", "rgb+ir", "depth+ir", "rgb+depth+ir"]


def test_mask_name_of_empty_mask_raises():
    with pytest.raises(ValueError):
        RGB_DEPTH_IR.mask_name((0, 0, 0))


def test_mask_from_name():
    assert RGB_DEPTH_IR.mask_from_name("rgb+ir") == (1, 0, 1)
    assert RGB_DEPTH_IR.mask_from_name("ir+rgb") == (1, 0, 1)  # any order
    assert RGB_DEPTH_IR.mask_from_name("depth") == (0, 1, 0)


@pytest.mark.parametrize("mask", all_masks(3))
def test_mask_name_round_trip(mask):
    assert RGB_DEPTH_IR.mask_from_name(RGB_DEPTH_IR.mask_name(mask)) == mask


def test_mask_from_unknown_name_raises_key_error_naming_it():
    with pytest.raises(KeyError, match="thermal"):
        RGB_DEPTH_IR.mask_from_name("rgb+thermal")


def test_modalities_basics():
    assert len(RGB_DEPTH_IR) == 3
    assert list(RGB_DEPTH_IR) == ["rgb", "depth", "ir"]
    assert RGB_DEPTH_IR.index("ir") == 2
    assert Modalities(("rgb", "depth", "ir")) == RGB_DEPTH_IR
    assert Modalities(["depth", "rgb", "ir"]) != RGB_DEPTH_IR


@pytest.mark.parametrize("names", [[], ["rgb", "rgb"], ["rgb", ""], ["rgb+ir"]])
def test_modalities_rejects_bad_names(names):
    with pytest.raises(ValueError):
        Modalities(names)


# ---------------------------------------------------------------- dropout sampler


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_sampler_never_draws_the_empty_mask(m):
    masks = MaskSampler(m).sample(2000, _generator(0))
    assert masks.shape == (2000, m)
    assert masks.dtype == torch.float32
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert bool((masks.sum(dim=1) > 0).all())


def test_sampler_is_reproducible_from_the_seed():
    sampler = MaskSampler(3)
    first = sampler.sample(64, _generator(123))
    again = sampler.sample(64, _generator(123))
    other = sampler.sample(64, _generator(124))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_sampler_with_probabilities_is_reproducible_from_the_seed():
    sampler = MaskSampler(3, [1, 2, 3, 4, 5, 6, 7])
    assert torch.equal(sampler.sample(64, _generator(5)), sampler.sample(64, _generator(5)))
    assert not torch.equal(sampler.sample(64, _generator(5)), sampler.sample(64, _generator(6)))


def test_sampler_advances_the_generator():
    generator = _generator(0)
    sampler = MaskSampler(3)
    assert not torch.equal(sampler.sample(64, generator), sampler.sample(64, generator))


@pytest.mark.parametrize("m", [2, 3, 4])
def test_sampler_reaches_every_mask(m):
    drawn = set(_rows(MaskSampler(m).sample(3000, _generator(1))))
    assert drawn == set(all_masks(m))


def test_sampler_is_uniform():
    draws = 20000
    counts = Counter(_rows(MaskSampler(3).sample(draws, _generator(2024))))
    assert set(counts) == set(all_masks(3))
    for mask in all_masks(3):
        assert abs(counts[mask] / draws - 1 / 7) < 0.02, mask


def test_sampler_follows_given_probabilities():
    draws = 20000
    weights = [2, 1, 1, 1, 1, 1, 1]  # not normalised on purpose: 2/8 and 1/8 each
    counts = Counter(_rows(MaskSampler(3, weights).sample(draws, _generator(7))))
    for mask, weight in zip(all_masks(3), weights, strict=True):
        assert abs(counts[mask] / draws - weight / 8) < 0.02, mask


def test_sampler_zero_probability_mask_is_never_drawn():
    probabilities = [0.0, 1, 1, 1, 1, 1, 1]
    drawn = set(_rows(MaskSampler(3, probabilities).sample(5000, _generator(3))))
    assert (1, 0, 0) not in drawn
    assert drawn == set(all_masks(3)[1:])


def test_sampler_probability_one_mask_is_always_drawn():
    probabilities = [0, 0, 0, 0, 1.0, 0, 0]  # rgb+ir
    masks = MaskSampler(3, probabilities).sample(500, _generator(4))
    assert set(_rows(masks)) == {(1, 0, 1)}


@pytest.mark.parametrize(
    "probabilities",
    [
        [1, 1, 1],  # m = 2 has 3 masks, m = 3 needs 7
        [1] * 8,
        [0.5, 0.5, 0.5, -0.1, 0.2, 0.2, 0.2],
        [0] * 7,
        [],
    ],
)
def test_sampler_rejects_bad_probabilities(probabilities):
    with pytest.raises(ValueError):
        MaskSampler(3, probabilities)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_sampler_rejects_non_finite_probabilities(bad):
    with pytest.raises(ValueError):
        MaskSampler(3, [bad, 1, 1, 1, 1, 1, 1])


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 5), batch=st.integers(1, 50), seed=st.integers(0, 2**31 - 1))
def test_sampler_draws_only_valid_masks(m, batch, seed):
    rows = _rows(MaskSampler(m).sample(batch, _generator(seed)))
    assert len(rows) == batch
    assert set(rows) <= set(all_masks(m))

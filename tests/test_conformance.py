"""Every registered entry passes the conformance checks of :mod:`mmanet.testing` (the ones
a user runs on their own entry), and the checks reject what they exist to reject."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mmanet.methods import get_method
from mmanet.registry import FUSIONS, LOSS_TERMS, Registry
from mmanet.testing import REGISTRIES, check_entry, check_fusion, check_settings

QUICK = ("fusion", "distillation loss", "regularizer")


def entries(kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(kind, name) for kind in kinds for name in REGISTRIES[kind].names()]


@pytest.mark.parametrize(("kind", "name"), entries(QUICK))
def test_every_builtin_entry_conforms(kind, name):
    check_entry(kind, name)


@pytest.mark.parametrize(
    "name", [n for n in REGISTRIES["method"].names() if not get_method(n).per_combination]
)
def test_every_builtin_method_trains_and_is_evaluated_on_every_combination(name):
    check_entry("method", name)


@pytest.mark.parametrize(("kind", "name"), entries(tuple(REGISTRIES)))
def test_every_builtin_entrys_settings_conform(kind, name):
    check_settings(REGISTRIES[kind], name)


class PeekingFusion(nn.Module):
    """Reads the features of absent modalities: what the fusion check exists to catch."""

    def __init__(self, channels):
        super().__init__()
        self.out_channels = sum(channels)

    def forward(self, features, mask):
        return torch.cat(features, dim=1) + sum(f.sum() for f in features) * 0 + features[0].mean()


def test_the_fusion_check_rejects_a_fusion_that_reads_absent_features():
    FUSIONS.register("peeking", PeekingFusion)
    try:
        with pytest.raises(AssertionError, match="depends on an absent modality"):
            check_fusion("peeking")
    finally:
        FUSIONS.unregister("peeking")


def test_settings_without_defaults_are_rejected():
    @dataclass
    class NoDefault:
        size: int

    registry = Registry(
        "loss term", "method.terms", "mmanet.engine.objective", LOSS_TERMS.interface
    )
    registry.register("thing", lambda step: None, settings=NoDefault)
    with pytest.raises(AssertionError, match="every field needs a default"):
        check_settings(registry, "thing")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (lambda: None, r"loss term 'bad' must take \(step\)"),
        (lambda a, b: None, r"loss term 'bad' must take \(step\)"),
        (42, "must be callable"),
    ],
)
def test_an_entry_that_does_not_fit_its_interface_is_refused_when_it_registers(entry, message):
    with pytest.raises(TypeError, match=message):
        LOSS_TERMS.register("bad", entry)
    assert "bad" not in LOSS_TERMS


def test_an_unknown_declaration_is_refused():
    with pytest.raises(TypeError, match="unknown declaration 'needs_techer'"):
        LOSS_TERMS.register("bad", lambda step: None, needs_techer=True)

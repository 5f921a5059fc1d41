"""Conformance checks for registered entries: what every fusion, regularizer, distillation
loss, loss term, method, dataset and settings class must do, as functions a test calls.

The built-in entries' tests run them over everything registered (``tests/
test_conformance.py``); run the same on your own entry::

    from mmanet.testing import check_entry

    def test_my_fusion():
        import my_fusion  # registers "gated"
        check_entry("fusion", "gated")

Each check raises ``AssertionError`` naming the entry and what it broke.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmanet.config import SECTIONS, ModelConfig, build_config, from_dict, owned_settings, to_dict
from mmanet.registry import DISTILLATIONS, REGISTRIES, REGULARIZERS, Registry

# the bundled demo, tiny: what the method and loss-term checks train
TINY = [
    "optim.epochs=3",
    "optim.warmup_epochs=1",
    "optim.milestones=[2]",
    "method.mar.warmup_epochs=1",
    "data.modalities=[fou,kar,mor]",
    "model.encoder.widths=[32,16]",
    "model.head_widths=[32]",
    "tensorboard=false",
    "progress=false",
    "threads=1",
]


def check_settings(registry: Registry, name: str) -> None:
    """The entry's settings (if it declares some): a dataclass whose every field has a
    default, that survives the config's round trip (YAML form and back), held under a key
    that no config key of its section takes."""
    declared = registry.settings(name)
    if declared is None:
        return
    key, cls = declared
    where = f"{registry.kind} {name!r}: settings {cls.__name__}"
    try:
        default = cls()
    except TypeError as err:
        raise AssertionError(f"{where}: every field needs a default ({err})") from None
    assert from_dict(cls, to_dict(default)) == default, f"{where}: do not survive to_dict"
    for section in SECTIONS.values():
        if registry in section.REGISTRIES:
            assert key in owned_settings(section), f"{where}: not found under its key {key!r}"
            fields = {f.name for f in dataclasses.fields(section)}
            assert key not in fields, f"{where}: {key!r} is a config key of its section"


def check_fusion(name: str, channels: Sequence[int] = (6, 4, 5), batch: int = 3) -> None:
    """A fusion built for vectors of ``channels``: for every non-empty mask, an output of
    ``out_channels`` per sample, finite, and the same whatever an absent modality's
    features hold (the network zeroes them; the fusion must not read them)."""
    from mmanet.fusion import build_fusion, fusion_settings
    from mmanet.outputs import fused_map

    torch.manual_seed(0)
    own = fusion_settings(ModelConfig(fusion=name))  # its settings' defaults
    if "widths" in own:
        own["widths"] = "small"  # the built-ins' paper widths are large for a check
    fusion = build_fusion(name, channels, num_classes=3, vectors=True, **own).eval()
    assert isinstance(getattr(fusion, "out_channels", None), int), f"fusion {name!r}: out_channels"
    features = [torch.randn(batch, c) for c in channels]
    for bits in itertools.product((0, 1), repeat=len(channels)):
        if not any(bits):
            continue
        mask = torch.tensor(bits, dtype=torch.float32).expand(batch, -1)
        zeroed = [f * bit for f, bit in zip(features, bits, strict=True)]
        noisy = [
            f if bit else torch.randn_like(f) * 10 for f, bit in zip(features, bits, strict=True)
        ]
        with torch.no_grad():
            fused, again = fusion(zeroed, mask), fusion(noisy, mask)
        tensor, other = fused_map(fused), fused_map(again)
        assert tensor.shape[:2] == (batch, fusion.out_channels), (
            f"fusion {name!r}: mask {bits} gave {tuple(tensor.shape)}, "
            f"expected ({batch}, {fusion.out_channels}, ...)"
        )
        assert torch.isfinite(tensor).all(), f"fusion {name!r}: mask {bits}: not finite"
        assert torch.allclose(tensor, other, atol=1e-5), (
            f"fusion {name!r}: mask {bits}: the output depends on an absent modality's features"
        )


def check_distillation(name: str, batch: int = 4) -> None:
    """A distillation loss: a finite scalar that back-propagates into the student, and
    zero when the student's features are the teacher's."""
    loss = DISTILLATIONS.get(name)
    method = build_config(overrides=[f"method.distill={name}"]).method
    torch.manual_seed(0)
    teacher, logits = torch.randn(batch, 8), torch.randn(batch, 3)
    student = torch.randn(batch, 8, requires_grad=True)
    value = loss(student, teacher, logits, method)
    assert value.ndim == 0 and torch.isfinite(value), f"distillation {name!r}: not a finite scalar"
    value.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0, (
        f"distillation {name!r}: no gradient reaches the student"
    )
    same = loss(teacher.clone(), teacher, logits, method)
    assert float(same) == 0.0 or abs(float(same)) < 1e-6, (
        f"distillation {name!r}: {float(same):g} when the student equals the teacher"
    )


def check_regularizer(name: str, modalities: int = 3) -> None:
    """A regularizer's miner: a Ω fixed from the start, or mined from the label counts of
    the full and drop-one masks ((m + 1, k), as the trainer passes them) after the epochs
    it names; then Ω holds non-empty masks of ``modalities`` modalities."""
    method = build_config(overrides=[f"method.regularize={name}"]).method
    miner = REGULARIZERS.get(name)(modalities, method)
    for attribute in ("omega", "needs_mining", "update", "omega_lookup"):
        assert hasattr(miner, attribute), f"regularizer {name!r}: its miner has no {attribute}"
    if miner.omega is None:
        epochs = [e for e in range(1, 12) if miner.needs_mining(e)]
        assert epochs, f"regularizer {name!r}: no Ω, and it never mines in 11 epochs"
        torch.manual_seed(0)
        for epoch in epochs:
            miner.update(epoch, torch.rand(modalities + 1, 4) * 10)
    assert miner.omega is not None, f"regularizer {name!r}: no Ω after mining"
    for mask in miner.omega:
        assert len(mask) == modalities and sum(mask) > 0, f"regularizer {name!r}: Ω mask {mask}"


def check_method(name: str, overrides: Sequence[str] = (), out: str | Path | None = None) -> Any:
    """A method trains three tiny epochs on the bundled demo (its teacher first, when it
    reads one) with finite losses in every epoch's log, and is evaluated on every
    modality combination. Returns the trainer."""
    import tempfile

    from mmanet.engine import Trainer
    from mmanet.experiment import demo_config_path

    folder = Path(out or tempfile.mkdtemp(prefix=f"mmanet-check-{name}-"))
    layer = [*TINY, *overrides]
    config = build_config(
        demo_config_path(), [*layer, f"method.name={name}", f"out={folder / name}"]
    )
    if config.method.uses_teacher and config.method.teacher is None:
        teacher = build_config(
            demo_config_path(),
            [*layer, "method.name=teacher", "method.terms={}", f"out={folder / 'teacher'}"],
        )
        Trainer(teacher).fit(overwrite=True, test=False)
        config = build_config(
            demo_config_path(),
            [
                *layer,
                f"method.name={name}",
                f"out={folder / name}",
                f"method.teacher={folder / 'teacher'}",
            ],
        )
    trainer = Trainer(config)
    result = trainer.fit(overwrite=True)
    assert result is not None, f"method {name!r}: no test result"
    expected = 2 ** len(trainer.data.modalities) - 1
    if not trainer.cfg.method.combination:
        combinations = result["combinations"]
        assert len(combinations) == expected, f"method {name!r}: {len(combinations)} combinations"
    import csv
    import math

    with open(trainer.run_dir / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == config.optim.epochs, f"method {name!r}: {len(rows)} epochs logged"
    for row in rows:
        for key, value in row.items():
            if key.startswith("loss") and value:
                assert math.isfinite(float(value)), f"method {name!r}: {key} = {value}"
    return trainer


def check_loss_term(name: str, weight: float = 0.1) -> Any:
    """A loss term added to the unified baseline (``method.terms.<name>``) trains (see
    :func:`check_method`); a term that reads the teacher gets one."""
    return check_method("sf_md", [f"method.terms={{{name}: {weight}}}"])


CHECKS = {
    "fusion": check_fusion,
    "distillation loss": check_distillation,
    "regularizer": check_regularizer,
    "method": check_method,
    "loss term": check_loss_term,
}


def check_entry(kind: str, name: str) -> None:
    """Every check that applies to the entry ``name`` of ``kind`` (a registry's kind:
    "fusion", "method", "loss term", ...): its interface (checked when it registered),
    its settings, and its behaviour."""
    registry = REGISTRIES[kind]
    registry.get(name)
    check_settings(registry, name)
    check = CHECKS.get(kind)
    if check is not None:
        check(name)


__all__ = [
    "CHECKS",
    "REGISTRIES",
    "check_distillation",
    "check_entry",
    "check_fusion",
    "check_loss_term",
    "check_method",
    "check_regularizer",
    "check_settings",
]

"""Fusion modules. One interface: ``fusion(features, mask) -> fused``.

``features`` is the list of per-modality feature tensors in modality order, each (b, c_i)
or (b, c_i, h, w) (all of one kind, maps of one size); ``mask`` is the (b, m) 0/1 mask of
present modalities. Every module's output is invariant to the values of absent inputs, and
every module has ``out_channels``, the fused width. A module with auxiliary heads (rfnet,
mmformer with ``aux=True``) also has ``forward_auxiliary(features, mask) -> (fused,
[AuxiliaryLogits, ...])``, which the training step calls.

A fusion is registered by name (``@register_fusion("name")`` on its class or factory)
and built by :func:`build_fusion`, which passes it the options its signature names
among ``num_classes``, ``aux``, ``vectors`` and ``region_supervision``, and its own
settings (``model.<name>``, declared with ``register_fusion(name, settings=...)``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from mmanet.errors import ConfigError
from mmanet.registry import FUSIONS

register_fusion = FUSIONS.register

# the built-in fusions register themselves on import
from mmanet.fusion.concat import ConcatFusion  # noqa: E402
from mmanet.fusion.hemis import HeMISFusion  # noqa: E402
from mmanet.fusion.lcr import LCRFusion  # noqa: E402
from mmanet.fusion.mmformer import MMFormerFusion  # noqa: E402
from mmanet.fusion.rfnet import RFNetFusion  # noqa: E402
from mmanet.fusion.shaspec import ShaSpecFusion  # noqa: E402


def build_fusion(
    name: str,
    channels: Sequence[int],
    num_classes: int,
    *,
    aux: bool = False,
    vectors: bool = False,
    region_supervision: bool = False,
    **settings: Any,
) -> nn.Module:
    """The registered fusion ``name`` for per-modality widths ``channels``.

    Args:
        name: a registered fusion (:data:`mmanet.registry.FUSIONS`).
        channels: per-modality feature widths c_i, in modality order.
        num_classes: classes of the task, for auxiliary heads.
        aux: build the auxiliary heads (an error for a fusion without them).
        vectors: the features are (b, c) vectors (RFNet's convolutions become 1×1).
        region_supervision: supervise RFNet's region maps with dense labels (ESANet).
        settings: the fusion's own settings (``model.<name>``: RFNet's ``regions`` and
            ``widths``, mmFormer's ``widths``), passed as keywords.
    """
    factory = FUSIONS.get(name)
    options: dict[str, Any] = {
        "num_classes": num_classes,
        "aux": aux,
        "vectors": vectors,
        "region_supervision": region_supervision,
    }
    accepted = inspect.signature(factory).parameters
    if aux and "aux" not in accepted:
        raise ConfigError(f"model.fusion_aux: model.fusion={name} has no auxiliary heads")
    unknown = [key for key in settings if key not in accepted]
    if unknown:
        raise ConfigError(f"model.{name}.{unknown[0]}: fusion {name!r} takes no such setting")
    chosen = {k: v for k, v in options.items() if k in accepted}
    return factory(channels, **chosen, **settings)


def fusion_settings(cfg: Any) -> dict[str, Any]:
    """The keywords of the fusion a model config names: its settings (``model.<fusion>``),
    or none when it declared none."""
    name = "concat" if cfg.fusion == "default" else cfg.fusion
    if FUSIONS.settings(name) is None:
        return {}
    return dataclasses.asdict(getattr(cfg, name))


def configured_fusion(
    cfg: Any, channels: Sequence[int], num_classes: int, *, vectors: bool = False
) -> nn.Module:
    """The fusion a model config asks for (``model.fusion``, ``fusion_aux`` and the
    fusion's own settings ``model.<fusion>``); ``"default"`` is concatenation."""
    name = "concat" if cfg.fusion == "default" else cfg.fusion
    return build_fusion(
        name, channels, num_classes, aux=cfg.fusion_aux, vectors=vectors, **fusion_settings(cfg)
    )


__all__ = [
    "ConcatFusion",
    "HeMISFusion",
    "LCRFusion",
    "MMFormerFusion",
    "RFNetFusion",
    "ShaSpecFusion",
    "build_fusion",
    "configured_fusion",
    "fusion_settings",
    "register_fusion",
]

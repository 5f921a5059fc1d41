"""Model builders, named by ``model.name`` in the config.

A builder ``(cfg, modalities, input_shapes, num_classes, reg_head) -> UnifiedNetwork``
registers itself with ``@register_model("name")``. Without writing a builder, hand your
own encoder modules to :func:`from_encoders` (Python API) or :func:`register_encoders`
(a name for configs and every command).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mmanet.config import ModelConfig
from mmanet.outputs import AuxiliaryLogits, NetworkOutput
from mmanet.registry import MODELS

Builder = Callable[
    [ModelConfig, Sequence[str], Mapping[str, Sequence[int]], int, bool], "UnifiedNetwork"
]
register_model = MODELS.register

# the built-in builders register themselves on import
from mmanet.models.custom import from_encoders, register_encoders  # noqa: E402
from mmanet.models.esanet import build_esanet  # noqa: E402
from mmanet.models.multiview import build_multiview  # noqa: E402
from mmanet.models.sf import build_sf  # noqa: E402
from mmanet.models.unified import Encoded, UnifiedNetwork  # noqa: E402


def build_model(
    cfg: ModelConfig,
    modalities: Sequence[str],
    input_shapes: Mapping[str, Sequence[int]],
    num_classes: int,
    reg_head: bool = False,
    builder: Builder | None = None,
) -> UnifiedNetwork:
    """The network ``model.name`` names (or ``builder``'s), with a regularization head
    when ``reg_head``."""
    build = builder if builder is not None else MODELS.get(cfg.name)
    return build(cfg, modalities, input_shapes, num_classes, reg_head)


def baseline_title(cfg: ModelConfig) -> str:
    """What the paper calls the unified baseline on this network: SF, or ESANet."""
    return getattr(MODELS.get(cfg.name), "baseline_title", "SF")


__all__ = [
    "MODELS",
    "AuxiliaryLogits",
    "Builder",
    "Encoded",
    "NetworkOutput",
    "UnifiedNetwork",
    "baseline_title",
    "build_esanet",
    "build_model",
    "build_multiview",
    "build_sf",
    "from_encoders",
    "register_encoders",
    "register_model",
]

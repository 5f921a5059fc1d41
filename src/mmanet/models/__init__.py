"""Model builders, named by ``model.name`` in the config."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mmanet.config import ConfigError, ModelConfig
from mmanet.models.esanet import build_esanet
from mmanet.models.multiview import build_multiview
from mmanet.models.sf import build_sf
from mmanet.models.unified import Encoded, NetworkOutput, UnifiedNetwork

Builder = Callable[
    [ModelConfig, Sequence[str], Mapping[str, Sequence[int]], int, bool], UnifiedNetwork
]

MODELS: dict[str, Builder] = {
    "esanet": build_esanet,
    "multiview": build_multiview,
    "sf": build_sf,
}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make a builder available as ``model.name=<name>``."""

    def register(builder: Builder) -> Builder:
        MODELS[name] = builder
        return builder

    return register


def build_model(
    cfg: ModelConfig,
    modalities: Sequence[str],
    input_shapes: Mapping[str, Sequence[int]],
    num_classes: int,
    reg_head: bool = False,
) -> UnifiedNetwork:
    if cfg.name not in MODELS:
        raise ConfigError(f"unknown model.name={cfg.name!r}; known: {', '.join(MODELS)}")
    return MODELS[cfg.name](cfg, modalities, input_shapes, num_classes, reg_head)


__all__ = ["MODELS", "Encoded", "NetworkOutput", "UnifiedNetwork", "build_model", "register_model"]

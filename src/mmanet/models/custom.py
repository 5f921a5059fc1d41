"""Your own encoders (and optionally fusion and head) as a network, without a builder.

::

    from mmanet.models import from_encoders

    def my_encoders():  # fresh modules each call: student, teacher, exported network
        return {"accel": Conv1dEncoder(3), "gyro": Conv1dEncoder(3)}

    Trainer(config, data, model=from_encoders(my_encoders)).fit()

The encoders' output shapes come from a dry run on the meta device. The fusion is the
config's ``model.fusion`` (concatenation by default) unless you pass one; the head (and
the regularization head) is the MLP head of ``model.head_widths`` — after global average
pooling when the encoders return maps — unless you pass one. :func:`register_encoders`
gives the network a name, so that ``model.name=<name>`` (with the module listed in
``imports``) trains, evaluates, exports and predicts through every command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import nn

from mmanet.config import ModelConfig
from mmanet.errors import ConfigError
from mmanet.fusion import configured_fusion
from mmanet.models.unified import UnifiedNetwork, output_shape
from mmanet.nn import MLPHead
from mmanet.registry import MODELS

EncoderFactory = Callable[[], Mapping[str, nn.Module]]
FusionFactory = Callable[[Sequence[int], int], nn.Module]  # (widths, classes) -> fusion
HeadFactory = Callable[[int, int], nn.Module]  # (fused width, classes) -> head


class PooledHead(nn.Module):
    """A vector head on (b, c, h, w) maps: global average pooling first."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = head

    def forward(self, fused):
        return self.head(self.pool(fused))


def from_encoders(
    encoders: EncoderFactory,
    fusion: FusionFactory | None = None,
    head: HeadFactory | None = None,
) -> Callable[..., UnifiedNetwork]:
    """A model builder from a factory of ``{modality: encoder}`` modules.

    Args:
        encoders: called once per network built; returns one new module per modality,
            each mapping a (b, *input_shape) batch to (b, c) vectors or (b, c, h, w) maps.
        fusion: ``(per-modality widths, classes) -> fusion module`` (default: the config's
            ``model.fusion``); it must have ``out_channels``.
        head: ``(fused width, classes) -> head`` returning ``(features, logits)`` (default:
            ``model.head_widths`` MLP, pooled for maps); also used for the
            regularization head.
    """

    def build(
        cfg: ModelConfig,
        modalities: Sequence[str],
        input_shapes: Mapping[str, Sequence[int]],
        num_classes: int,
        reg_head: bool,
    ) -> UnifiedNetwork:
        modules = dict(encoders())
        if sorted(modules) != sorted(modalities):
            raise ConfigError(
                f"the encoders are for {sorted(modules)}, the data has {list(modalities)}"
            )
        shapes = [output_shape(modules[name], input_shapes[name]) for name in modalities]
        widths = [shape[0] for shape in shapes]
        vectors = all(len(shape) == 1 for shape in shapes)
        fuser = (
            fusion(widths, num_classes)
            if fusion is not None
            else configured_fusion(cfg, widths, num_classes, vectors=vectors)
        )

        def new_head() -> nn.Module:
            if head is not None:
                return head(fuser.out_channels, num_classes)
            mlp = MLPHead(
                fuser.out_channels, cfg.head_widths, num_classes, cfg.head_dropout, cfg.head_norm
            )
            return mlp if vectors else PooledHead(mlp)

        return UnifiedNetwork(
            modalities,
            modules,
            fuser,
            new_head(),
            input_shapes,
            reg_head=new_head() if reg_head else None,
        )

    return build


def register_encoders(
    name: str,
    encoders: EncoderFactory,
    fusion: FusionFactory | None = None,
    head: HeadFactory | None = None,
) -> Callable[..., UnifiedNetwork]:
    """Register :func:`from_encoders` ``(encoders, fusion, head)`` as ``model.name=<name>``."""
    builder = from_encoders(encoders, fusion, head)
    builder.__qualname__ = f"register_encoders.{name}"
    builder.__module__ = getattr(encoders, "__module__", __name__)
    MODELS.register(name, builder)
    return builder


__all__ = ["PooledHead", "from_encoders", "register_encoders"]

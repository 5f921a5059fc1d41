"""The unified (deployment) network: per-modality encoders -> mask -> fusion -> head.

Encoding and fusing are separate steps, so every modality combination can be
evaluated from one encoder pass per batch (:meth:`UnifiedNetwork.predict_masks`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmanet.fusion.concat import ConcatFusion
from mmanet.modality import Modalities
from mmanet.outputs import AuxiliaryLogits, NetworkOutput


@dataclass
class Encoded:
    """Per-modality encoded features, zeros where a modality was not given."""

    features: list[torch.Tensor]  # one (b, ...) tensor per modality, modality order
    present: torch.Tensor  # (m,) float 0/1: 1 where the modality was given

    @property
    def batch_size(self) -> int:
        return self.features[0].shape[0]


def output_shape(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Per-sample output shape of ``module`` for inputs of ``input_shape``, from a dry run
    on the meta device (no memory, no compute)."""
    meta = {k: torch.empty_like(v, device="meta") for k, v in module.state_dict().items()}
    probe = torch.empty((2, *input_shape), device="meta")
    return tuple(torch.func.functional_call(module, meta, (probe,)).shape[1:])


class UnifiedNetwork(nn.Module):
    """A network built from per-modality encoders, a fusion module and task heads.

    Args:
        modalities: modality names, in mask order.
        encoders: one module per modality name, mapping its input to a feature map.
        fusion: ``fusion(features, mask) -> fused``: the list of masked per-modality
            features (modality order) and the (b, m) mask. Optional capability:
            ``forward_auxiliary(features, mask) -> (fused, [AuxiliaryLogits, ...])``,
            auxiliary heads that the training loss adds (RFNet, mmFormer);
            ``forward_shared_specific(features, mask) -> (fused, SharedSpecific)``, the
            shared and specific features that the training loss reads (ShaSpec).
        head: ``head(fused) -> (features, logits)``. Optional capability:
            ``forward_sides(fused) -> (features, logits, [side logits, ...])``, side
            outputs of a decoder that the training loss supervises (ESANet);
            ``forward_output(fused, extras) -> NetworkOutput``, a head that builds its
            own output (DMRNet's probabilistic head returns its μ and log σ²).
        input_shapes: per-sample input shape of each modality, used to infer the shape
            of the zeros that stand in for a modality that is not given.
        reg_head: optional regularization head with the head's interface (training only).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        encoders: Mapping[str, nn.Module],
        fusion: nn.Module,
        head: nn.Module,
        input_shapes: Mapping[str, Sequence[int]],
        reg_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.modalities = Modalities(modalities)
        missing = [n for n in self.modalities if n not in encoders]
        if missing:
            raise ValueError(f"no encoder for modalities {missing}")
        self.encoders = nn.ModuleDict({name: encoders[name] for name in self.modalities})
        self.fusion = fusion
        self.head = head
        self.reg_head = reg_head
        self.input_shapes = {name: tuple(input_shapes[name]) for name in self.modalities}
        self.feature_shapes = {
            name: output_shape(self.encoders[name], self.input_shapes[name])
            for name in self.modalities
        }

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def encode(self, inputs: Mapping[str, torch.Tensor]) -> Encoded:
        """Run the encoder of every given modality once; zeros stand in for the others."""
        unknown = [k for k in inputs if k not in self.encoders]
        if unknown:
            raise KeyError(
                f"unknown modality {unknown[0]!r}; this network has {', '.join(self.modalities)}"
            )
        if not inputs:
            raise ValueError("no modality given: at least one input is needed")
        given = {
            name: self.encoders[name](inputs[name]) for name in self.modalities if name in inputs
        }
        reference = next(iter(given.values()))
        batch = reference.shape[0]
        features = [
            given[name]
            if name in given
            else reference.new_zeros((batch, *self.feature_shapes[name]))
            for name in self.modalities
        ]
        present = torch.tensor(
            [float(name in given) for name in self.modalities], device=reference.device
        )
        return Encoded(features, present)

    def fuse(
        self,
        encoded: Encoded,
        mask: torch.Tensor | None = None,
        head: str = "head",
        *,
        extras: bool = False,
    ) -> NetworkOutput:
        """Zero the features of absent modalities, fuse them and apply a head.

        Args:
            encoded: output of :meth:`encode`.
            mask: optional (b, m) 0/1 per-sample mask; a modality absent from the
                inputs is absent whatever the mask says.
            head: ``"head"`` (deployment) or ``"reg_head"`` (regularization network).
            extras: also return what the training loss reads besides the logits: the
                fusion's auxiliary heads or shared / specific features and the head's
                side outputs (when they have them).
        """
        mask = self.effective_mask(encoded, mask)
        masked = [
            feat * mask[:, i].view(-1, *([1] * (feat.ndim - 1))).to(feat.dtype)
            for i, feat in enumerate(encoded.features)
        ]
        auxiliary: list[AuxiliaryLogits] = []
        parts = None
        if extras and hasattr(self.fusion, "forward_auxiliary"):
            fused, auxiliary = self.fusion.forward_auxiliary(masked, mask)
        elif extras and hasattr(self.fusion, "forward_shared_specific"):
            fused, parts = self.fusion.forward_shared_specific(masked, mask)
        else:
            fused = self.fusion(masked, mask)
        out = self.apply_head(fused, head, extras=extras)
        out.auxiliary = auxiliary
        out.shared_specific = parts
        return out

    def apply_head(self, fused: Any, head: str = "head", *, extras: bool = False) -> NetworkOutput:
        """One head on fused features; ``extras``: with its side outputs, if it has any."""
        module = self.head if head == "head" else self.reg_head
        if module is None:
            raise ValueError("this network has no regularization head")
        if hasattr(module, "forward_output"):  # a head that returns more (DMRNet's embedding)
            return module.forward_output(fused, extras=extras)
        if extras and hasattr(module, "forward_sides"):
            features, logits, sides = module.forward_sides(fused)
            return NetworkOutput(fused, features, logits, side_logits=list(sides))
        features, logits = module(fused)
        return NetworkOutput(fused, features, logits)

    def effective_mask(self, encoded: Encoded, mask: torch.Tensor | None) -> torch.Tensor:
        present = encoded.present.expand(encoded.batch_size, -1)
        return present if mask is None else mask.to(present.dtype) * present

    def forward(
        self, inputs: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None
    ) -> NetworkOutput:
        return self.fuse(self.encode(inputs), mask)

    def predict_masks(
        self, encoded: Encoded, masks: torch.Tensor, max_rows: int = 4096
    ) -> torch.Tensor:
        """Logits for every mask in ``masks`` (c, m) from one encoder pass, shape (c, b, k, ...).

        The fusion and head run on the batch repeated once per mask, as many masks at a
        time as fit in ``max_rows`` samples (large batches are slower on CPU). With
        concatenation fusion and an MLP head the first layer is factorised per modality
        (:meth:`mmanet.nn.MLPHead.concat_mask_logits`).
        """
        b = encoded.batch_size
        concat_head = getattr(self.head, "concat_mask_logits", None)
        if concat_head is not None and isinstance(self.fusion, ConcatFusion) and not self.training:
            # concatenation + a linear first layer: one product per modality, not per mask
            features = [f.reshape(b, -1) for f in encoded.features]
            logits = concat_head(features, masks.to(features[0].device))
            if logits is not None:
                return logits
        chunk = max(1, max_rows // b)
        outputs = []
        for start in range(0, masks.shape[0], chunk):
            part = masks[start : start + chunk].to(encoded.present.device)
            c = part.shape[0]
            repeated = Encoded(
                [
                    f.unsqueeze(0).expand(c, *f.shape).reshape(c * b, *f.shape[1:])
                    for f in encoded.features
                ],
                encoded.present,
            )
            per_sample = part.repeat_interleave(b, dim=0)  # (c*b, m)
            logits = self.fuse(repeated, per_sample).logits
            outputs.append(logits.reshape(c, b, *logits.shape[1:]))
        return torch.cat(outputs)

    def deployment_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights of the shipped network: everything but the regularization head."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("reg_head.")}

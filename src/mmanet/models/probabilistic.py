"""DMRNet's network (docs/methods/dmrnet.md): the deployment head of a built network with
the probabilistic embedding inserted where DMRNet puts it.

- SF (:class:`~mmanet.models.sf.SFHead`): on the layer-4 map, before pooling and fc
  (the authors' ``SURF_Baseline_ConvDUL_Auxi_Share``);
- ESANet (:class:`~mmanet.models.esanet.ESANetDecoder`): on the fused bottleneck map
  after the context module, before the decoder (the authors' ``ESANet_DUL_Auxi``); the
  regularization head (DMRNet's auxiliary decoder) then reads the same sampled map;
- the bundled multiview MLP head (:class:`~mmanet.nn.MLPHead`): on the trunk's last
  hidden vector, before the classifier (our choice: DMRNet has no such network).

The head returns its μ and log σ² in :attr:`NetworkOutput.embedding`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from mmanet.errors import ConfigError
from mmanet.models.esanet import ESANetDecoder
from mmanet.models.sf import SFHead
from mmanet.models.unified import UnifiedNetwork
from mmanet.nn.mlp import MLPHead
from mmanet.nn.probabilistic import ProbabilisticEmbedding
from mmanet.outputs import GaussianEmbedding, NetworkOutput

PLACES = {SFHead: "layer4", ESANetDecoder: "context", MLPHead: "trunk"}


class ProbabilisticHead(nn.Module):
    """A task head with DMRNet's probabilistic embedding inside (see the module's doc).

    ``forward(fused) -> (features, logits)`` like the wrapped head;
    ``forward_output(fused, extras)`` returns the :class:`NetworkOutput` with μ, log σ²
    (and, for ESANet, ``fused`` with the sampled bottleneck map).
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        place = next((p for kind, p in PLACES.items() if isinstance(head, kind)), None)
        if place is None:
            raise ConfigError(
                f"method.name=dmrnet: no place for the probabilistic embedding in a "
                f"{type(head).__name__} head (it fits the sf, esanet and multiview models)"
            )
        self.head = head
        self.place = place
        if place == "layer4":
            channels = head.fc.in_features
        elif place == "trunk":
            channels = head.classifier.in_features
        else:
            first = head.decoder_modules[0]
            channels = next(m for m in first.modules() if isinstance(m, nn.Conv2d)).in_channels
        self.embedding = ProbabilisticEmbedding(channels, spatial=place != "trunk")

    def forward(self, fused: Any) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.forward_output(fused)
        return out.features, out.logits

    def forward_output(self, fused: Any, extras: bool = False) -> NetworkOutput:
        head = self.head
        sides: list[torch.Tensor] = []
        if self.place == "layer4":
            z, mu, logvar = self.embedding(head.layer4(head.layer3(fused)))
            features, logits = z, head.fc(head.avgpool(z).flatten(1))
        elif self.place == "trunk":
            z, mu, logvar = self.embedding(head.trunk(fused))
            features, logits = z, head.classifier(z)
        else:
            z, mu, logvar = self.embedding(fused.context)
            fused = dataclasses.replace(fused, context=z)  # what both decoders read
            features, logits, sides = head.forward_sides(fused)
        return NetworkOutput(
            fused,
            features,
            logits,
            side_logits=list(sides) if extras else [],
            embedding=GaussianEmbedding(mu, logvar),
        )


def probabilistic_network(network: UnifiedNetwork) -> UnifiedNetwork:
    """``network`` with its deployment head wrapped in a :class:`ProbabilisticHead`
    (its regularization head, if any, is left as it is)."""
    if not isinstance(network.head, ProbabilisticHead):
        network.head = ProbabilisticHead(network.head)
    return network


__all__ = ["PLACES", "ProbabilisticHead", "probabilistic_network"]

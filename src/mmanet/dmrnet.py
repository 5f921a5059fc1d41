"""DMRNet (Wei, Luo, Luo et al., ECCV 2024, arXiv 2407.04458) as a method of the one
training loop: ``method.name=dmrnet`` (docs/methods/dmrnet.md).

- the network: the model's deployment head with a probabilistic embedding
  (:mod:`mmanet.models.probabilistic`), trained on z = μ + ε·σ, deployed with z = μ;
- ``dmrnet_kl``: KL(N(μ, σ²) ‖ N(0, I)), weight λ_KL = ``method.terms.dmrnet_kl``;
- ``dmrnet_hard``: the task loss of the deployment output on the samples whose mask is in
  the hard set (MAR's mined Ω by default, or a fixed list of combinations), weight λ_hard =
  ``method.terms.dmrnet_hard``;
- ``dmrnet_aux`` (segmentation): the task loss of an auxiliary decoder on the samples that
  miss a modality, weight λ_aux = ``method.terms.dmrnet_aux`` (the decoder is built when
  it is > 0).

The weights are ``method.terms`` like every loss term's (the preset: λ_KL = 1e-3, λ_hard =
0.3); the terms return their unweighted values. The other settings are
``method.dmrnet.<key>`` (:class:`DMRNetSettings`). This module imports no torch: the
terms' arithmetic is in :mod:`mmanet.losses.dmrnet`, imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mmanet.methods import Method, register_method
from mmanet.registry import LOSS_TERMS

MINED = "mined"


@dataclass
class DMRNetSettings:
    """``method.dmrnet``: DMRNet's own settings."""

    # the KL term is on from epoch kl_after + 1 (1-based; segmentation: after epoch 10)
    kl_after: int = 0
    # "sample": summed over C x H x W, mean over the batch (classification); "pixel":
    # summed over C, mean over every pixel (segmentation); "auto": by the task
    kl_reduction: Literal["auto", "sample", "pixel"] = "auto"
    hard_after: int = 5  # the hard term is on from epoch hard_after + 1 (1-based)
    # "mined": the run's Ω (MAR's miner after method.mar.warmup_epochs, without MAR's
    # regularization head), or a list of combination names, e.g. [rgb, ir, rgb+ir]
    hard_set: str | list[str] = MINED
    # "batch": the loss summed over the hard samples / the batch size (the authors');
    # "rows": the mean over the hard samples
    hard_reduction: Literal["batch", "rows"] = "batch"
    # segmentation: the auxiliary decoder term (method.terms.dmrnet_aux) from epoch
    # aux_after + 1
    aux_after: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.hard_set, str) and self.hard_set != MINED:
            raise ValueError(
                f"hard_set must be 'mined' or a list of combinations such as "
                f"[rgb, ir, rgb+ir], got {self.hard_set!r}"
            )
        if isinstance(self.hard_set, list) and not self.hard_set:
            raise ValueError("hard_set is an empty list; name a combination")
        for key in ("kl_after", "hard_after", "aux_after"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")


def settings_of(method: Any) -> DMRNetSettings:
    """The DMRNet settings of a method config (``method.dmrnet``)."""
    return method.dmrnet


def hard_set_miner(method: Any) -> str | None:
    """The regularizer whose Ω the hard term reads: MAR's miner for ``hard_set=mined``, None
    for a fixed hard set (declared as ``dmrnet_hard``'s ``omega_from``: the run mines Ω
    with it while ``method.terms.dmrnet_hard`` > 0, without MAR's regularization head)."""
    return "mar" if settings_of(method).hard_set == MINED else None


@LOSS_TERMS.register("dmrnet_kl")
def kl_term(step: Any) -> Any:
    """KL(N(μ, σ²) ‖ N(0, I)) of the deployment head's embedding, unweighted (None before
    ``kl_after``)."""
    from mmanet.losses.dmrnet import kl_term as term

    return term(step, settings_of(step.method))


@LOSS_TERMS.register("dmrnet_hard", omega_from=hard_set_miner)
def hard_term(step: Any) -> Any:
    """The task loss on the hard combinations' samples, unweighted (None before
    ``hard_after``, before Ω is mined, or without such samples in the batch)."""
    from mmanet.losses.dmrnet import hard_term as term

    return term(step, settings_of(step.method))


@LOSS_TERMS.register("dmrnet_aux", needs_reg_head=True)
def aux_term(step: Any) -> Any:
    """The task loss of the auxiliary decoder (the regularization head, built while
    ``method.terms.dmrnet_aux`` > 0) on the samples missing a modality, unweighted (None
    before ``aux_after``, or without such samples)."""
    from mmanet.losses.dmrnet import aux_term as term

    return term(step, settings_of(step.method))


def dmrnet_network(network: Any, method: Any) -> Any:
    """The built network with DMRNet's probabilistic head (a fixed hard set's names are
    checked against its modalities here, before training)."""
    from mmanet.errors import ConfigError
    from mmanet.losses.dmrnet import hard_lookup
    from mmanet.models.probabilistic import probabilistic_network

    hard_set = settings_of(method).hard_set
    if not isinstance(hard_set, str):
        try:
            hard_lookup(list(network.modalities), hard_set)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return probabilistic_network(network)


register_method(
    Method(
        "dmrnet",
        "DMRNet",
        # λ_KL and λ_hard (classification; the paper tries λ_hard = 0.3, 0.5, 0.7, 0.3 gives
        # the authors' reported CASIA-SURF ACER); segmentation adds dmrnet_aux (NYUv2: 0.5)
        terms={"dmrnet_kl": 1e-3, "dmrnet_hard": 0.3},
        network=dmrnet_network,
        tables=("later",),
    ),
    settings=DMRNetSettings,
)

__all__ = ["MINED", "DMRNetSettings", "dmrnet_network", "hard_set_miner"]

"""ShaSpec (Wang et al., CVPR 2023, arXiv 2307.14126) as a method of the one training loop:
``method.name=shaspec`` (docs/methods/shaspec.md).

- the network: ``model.fusion=shaspec`` — a shared encoder for every modality, a specific
  encoder per modality, a missing modality filled with the mean of the available ones'
  shared features, residual fusion (:mod:`mmanet.models.shaspec`,
  :mod:`mmanet.fusion.shaspec`);
- ``shaspec_dao``: L_DAO, the L1 distance of the shared features of modality pairs, with
  weight ``method.terms.shaspec_dao`` (λ_DAO, 0.1);
- ``shaspec_dco``: L_DCO, a linear domain classifier's cross-entropy predicting the
  modality from its pooled specific features, weight ``method.terms.shaspec_dco`` (0.02);
- two stages: every sample with all its modalities before epoch ``dropout_from`` (by
  default after 4/9 of the epochs), random modality subsets from it on.

Its settings are ``method.shaspec.<key>`` (:class:`ShaSpecSettings`). This module imports
no torch: the losses are in :mod:`mmanet.losses.shaspec`, imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmanet.errors import ConfigError
from mmanet.methods import Method, register_method
from mmanet.registry import LOSS_TERMS

# their run.sh: 80 000 of 180 000 iterations on all modalities, then random subsets
FULL_SHARE = (80_000, 180_000)


@dataclass
class ShaSpecSettings:
    """``method.shaspec``: ShaSpec's own settings."""

    # The first epoch (1-based) of random modality subsets; every epoch before it trains
    # each sample with all its modalities (their first run; 1: one stage of random
    # subsets). None: after 4/9 of optim.epochs, the share of their run.sh (80 000 of
    # 180 000 iterations on all modalities): epoch 45 of 100.
    dropout_from: int | None = None

    def __post_init__(self) -> None:
        if self.dropout_from is not None and self.dropout_from < 1:
            raise ValueError(f"method.shaspec.dropout_from must be >= 1, got {self.dropout_from}")


def settings_of(method: Any) -> ShaSpecSettings:
    """The ShaSpec settings of a method config (``method.shaspec``)."""
    return method.shaspec


def first_dropout_epoch(config: Any) -> int:
    """The first epoch of random modality subsets: ``method.shaspec.dropout_from``, or
    after 4/9 of ``optim.epochs`` (their run.sh) when it is None."""
    epoch = settings_of(config.method).dropout_from
    return config.optim.epochs * FULL_SHARE[0] // FULL_SHARE[1] + 1 if epoch is None else epoch


def shared_specific(step: Any) -> Any:
    """The network's shared and specific features (a one-line error without them)."""
    parts = step.out.shared_specific
    if parts is None:
        raise ConfigError(
            "method.terms: shaspec_dao and shaspec_dco need model.fusion=shaspec (this "
            f"network's fusion, {type(step.model.fusion).__name__}, has no shared features)"
        )
    return parts


@LOSS_TERMS.register("shaspec_dao")
def dao_term(step: Any) -> Any:
    """L_DAO over the pairs of modalities each sample has (None without any)."""
    from mmanet.losses.shaspec import dao_loss

    return dao_loss(shared_specific(step).shared, step.mask)


@LOSS_TERMS.register("shaspec_dco")
def dco_term(step: Any) -> Any:
    """L_DCO over the modalities each sample has."""
    from mmanet.losses.shaspec import dco_loss

    return dco_loss(shared_specific(step).domain_logits, step.mask)


register_method(
    Method(
        "shaspec",
        "ShaSpec",
        fusion="shaspec",
        # λ_DAO and λ_DCO: their train_SS.py, alpha = 0.1 and beta = 0.02
        terms={"shaspec_dao": 0.1, "shaspec_dco": 0.02},
        dropout_from=first_dropout_epoch,
        tables=("later",),
    ),
    settings=ShaSpecSettings,
)

__all__ = ["ShaSpecSettings", "dao_term", "dco_term", "first_dropout_epoch"]

"""The methods: one table of named presets of the one training loop.

A method is a setting of the loop's switches — modality dropout, the distillation loss
(the α term of paper Eq. 1), the regularizer (the β term) — plus what a comparison needs
to show it: its column title, the fusion module it trains (the unified baselines of
paper Tables 2-5) and the paper tables that list it. Methods differ by configuration,
never by a fork of the loop. Add one with :func:`register_method`::

    register_method(Method("sf_rkd", "SF-MD+RKD", distill="rkd"))

and train it with ``method.name=sf_rkd``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmanet.registry import METHODS

# The paper's tables a comparison can write: name -> title. A method lists the tables it
# belongs to (``Method.tables``); columns follow the order of registration.
TABLES = {
    "headline": "The unified baseline and MMANet",
    "comparison": "Comparison with the unified methods",
    "distillation": "Ablation: MAD vs SP",
    "regularization": "Ablation: MAR vs SR",
    "ablation": "Ablation: every component",
    "later": "The methods that came after: DMRNet (ECCV 2024) and ShaSpec (CVPR 2023)",
}


@dataclass(frozen=True)
class Method:
    """A named preset of the training loop.

    Attributes:
        name: ``method.name``.
        title: its column title in the paper's tables (``SF-`` becomes the model's own
            baseline name, e.g. ``ESANet-``, see :func:`method_titles`).
        dropout: per-sample modality dropout (False: the full mask, or ``combination``).
        distill: a registered distillation loss (``method.distill``), or ``"none"``.
        regularize: a registered regularizer (``method.regularize``), or ``"none"``.
        fusion: the fusion module this method trains (``model.fusion``); None: the
            model's own.
        fusion_aux: build the fusion's auxiliary heads (their loss has weight
            ``method.aux_weight``).
        per_combination: one model per combination (the customized baseline).
        samples: the training samples, ``"all"`` or only the ``"complete"`` ones.
        terms: more registered loss terms and their weights (``method.terms``).
        network: the method's change to the built network, ``(network, method config) ->
            network`` (DMRNet's probabilistic head); None: the model as built.
        dropout_from: the first epoch of modality dropout, ``(config) -> epoch`` (ShaSpec's
            second stage; every sample has all its modalities before it); None: from the
            first epoch.
        tables: the paper tables (:data:`TABLES`) that list it.
    """

    name: str
    title: str
    dropout: bool = True
    distill: str = "none"
    regularize: str = "none"
    fusion: str | None = None
    fusion_aux: bool = False
    per_combination: bool = False
    samples: str = "all"
    terms: dict[str, float] = field(default_factory=dict)
    tables: tuple[str, ...] = field(default_factory=tuple)
    network: Callable[[Any, Any], Any] | None = None
    dropout_from: Callable[[Any], int] | None = None

    def preset(self) -> dict[str, Any]:
        """The config this method sets, under every file and override."""
        preset: dict[str, Any] = {
            "method": {
                "dropout": self.dropout,
                "distill": self.distill,
                "regularize": self.regularize,
                "samples": self.samples,
                "terms": dict(self.terms),
            }
        }
        if self.fusion is not None:
            preset["model"] = {"fusion": self.fusion, "fusion_aux": self.fusion_aux}
        return preset

    @property
    def distils(self) -> bool:
        return self.distill != "none"


def register_method(method: Method, settings: type | None = None) -> Method:
    """Make ``method`` available as ``method.name=<method.name>``; ``settings``: a
    dataclass of its own settings (``method.<name>.<key>`` in a config)."""
    unknown = [t for t in method.tables if t not in TABLES]
    if unknown:
        raise ValueError(f"method {method.name!r}: unknown table {unknown[0]!r} (see TABLES)")
    METHODS.register(method.name, method, settings=settings)
    return method


def get_method(name: str) -> Method:
    """The method ``name`` (a one-line error listing the registered ones otherwise)."""
    return METHODS.get(name)


def method_network(network: Any, method: Any) -> Any:
    """``network`` as the method ``method.name`` trains and ships it (its ``network``
    change applied; both the trainer and :func:`mmanet.engine.network.load_network`
    build a network through this)."""
    change = get_method(method.name).network
    return network if change is None else change(network, method)


def methods_in(table: str) -> list[str]:
    """The methods a paper table lists, in registration order."""
    if table not in TABLES:
        raise KeyError(table)
    return [name for name, method in METHODS.items() if table in method.tables]


def method_titles(baseline: str = "SF") -> dict[str, str]:
    """Column titles; the paper calls the baselines on another network by its name
    (ESANet-MD, ESANet-MAD, ... for segmentation)."""
    return {name: m.title.replace("SF-", f"{baseline}-") for name, m in METHODS.items()}


for _method in (
    Method("teacher", "Teacher", dropout=False, samples="complete"),
    Method("customized", "Customized", dropout=False, per_combination=True,
           tables=("comparison",)),
    Method("sf_md", "SF-MD",
           tables=("headline", "comparison", "distillation", "ablation", "later")),
    Method("hemis", "HeMIS", fusion="hemis", tables=("comparison",)),
    Method("lcr", "LCR", fusion="lcr", tables=("comparison",)),
    Method("rfnet", "RFNet", fusion="rfnet", fusion_aux=True, tables=("comparison",)),
    Method("mmformer", "mmFormer", fusion="mmformer", fusion_aux=True, tables=("comparison",)),
    Method("sf_md_sp", "SF-MD+SP", distill="sp", tables=("distillation", "ablation")),
    Method("sf_mad", "SF-MD+MAD", distill="mad",
           tables=("distillation", "regularization", "ablation")),
    Method("sf_mad_sr", "SF-MAD+SR", distill="mad", regularize="sr",
           tables=("regularization", "ablation")),
    Method("mmanet", "MMANet", distill="mad", regularize="mar",
           tables=("headline", "comparison", "regularization", "ablation", "later")),
):  # fmt: skip
    register_method(_method)

# methods defined in modules of their own register with the built-ins
import mmanet.dmrnet  # noqa: E402
import mmanet.shaspec  # noqa: E402, F401

__all__ = [
    "TABLES",
    "Method",
    "get_method",
    "method_network",
    "method_titles",
    "methods_in",
    "register_method",
]

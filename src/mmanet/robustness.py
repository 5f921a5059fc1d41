"""Robustness summaries: the expected score under independent sensor failure, and ImageNet-C's
mean corruption error.

Sensor failure: each modality ``m`` fails independently with probability ``p_m``. A sample
then arrives with combination ``c`` (the modalities that did not fail) with probability
``P(c) = prod_{m in c} (1 - p_m) * prod_{m not in c} p_m``. The empty combination (every
sensor failed) admits no decision; its probability is reported separately, and the expected
score is the score conditional on a decision being possible. Combination names follow
:class:`mmanet.modality.Modalities` (``"rgb+depth"``; any order of the parts is accepted).

Corruption error: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019 (ImageNet-C), §3: ``CE_c = sum_s E_{s,c} /
sum_s E^ref_{s,c}`` over severities ``s``, mCE = mean over corruptions ``c``; the relative
version subtracts each model's clean error from every term. CE values are returned in % (a
model as robust as the reference scores 100), as the paper reports them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mmanet.modality import Mask, Modalities
from mmanet.report import defined_mean, seed_stats


@dataclass(frozen=True)
class ExpectedScore:
    """The expected score under sensor failure (see the module docstring)."""

    expected: float  # sum_{c != empty} P(c) * score(c) / (1 - P(empty)); NaN when P(empty) = 1
    p_empty: float  # P(every sensor fails) = prod_m p_m: the rate of no decision
    unnormalised: float  # sum_{c != empty} P(c) * score(c) (the empty combination scores 0)


def combination_probabilities(
    failure_rates: Mapping[str, float], modalities: Modalities | Sequence[str]
) -> tuple[dict[str, float], float]:
    """``({combination: P(c)}, P(empty))`` with P(c) = prod_present (1 - p_m) * prod_absent p_m."""
    mods = _modalities(modalities)
    rates = _failure_rates(failure_rates, mods)
    probabilities: dict[str, float] = {}
    for mask in mods.combinations:
        probabilities[mods.mask_name(mask)] = _mask_probability(mask, rates)
    return probabilities, math.prod(rates)


def expected_score(
    failure_rates: Mapping[str, float],
    scores: Mapping[str, float] | Mapping[str, Mapping[str, float]],
    modalities: Modalities | Sequence[str],
    metric: str | None = None,
) -> ExpectedScore:
    """E[score | a decision is possible] = sum_{c != empty} P(c) score(c) / (1 - P(empty))."""
    mods = _modalities(modalities)
    rates = _failure_rates(failure_rates, mods)
    table = _score_table(scores, mods, metric)
    return _expected(rates, table, mods)


def failure_sweep(
    scores: Mapping[str, float] | Mapping[str, Mapping[str, float]],
    modalities: Modalities | Sequence[str],
    grid: Iterable[float],
    metric: str | None = None,
) -> list[tuple[float, float, float]]:
    """``[(p, expected score, P(empty))]`` with every modality failing with the same ``p``."""
    mods = _modalities(modalities)
    table = _score_table(scores, mods, metric)
    rows = []
    for p in grid:
        rates = _failure_rates(dict.fromkeys(mods.names, p), mods)
        result = _expected(rates, table, mods)
        rows.append((float(p), result.expected, result.p_empty))
    return rows


NO_DEGRADATION = 1e-9  # points: a reference degradation this small is none (float noise)


@dataclass(frozen=True)
class CorruptionErrors:
    """ImageNet-C summaries (Hendrycks & Dietterich, ICLR 2019); CE values in %."""

    ce: dict[str, float]  # CE_c = 100 * sum_s E_{s,c} / sum_s E^ref_{s,c}
    mce: float  # mean over corruptions of CE_c
    relative_ce: dict[
        str, float
    ]  # 100 * sum_s (E_{s,c} - E_clean) / sum_s (E^ref_{s,c} - E^ref_clean)
    # mean over the corruptions whose relative CE is defined (NaN when none is)
    relative_mce: float
    mean_error: float  # unnormalised: mean of E_{s,c} over all corruptions and severities


def corruption_errors(
    errors: Mapping[str, Sequence[float]],
    clean_error: float,
    reference_errors: Mapping[str, Sequence[float]],
    reference_clean_error: float,
) -> CorruptionErrors:
    """mCE = mean_c 100 * sum_s E_{s,c} / sum_s E^ref_{s,c}, with relative mCE and mean error.

    ``errors``: ``{corruption: [error at severity 1, 2, ...]}`` (ImageNet-C has severities
    1..5); the reference table must have the same corruptions and the same number of
    severities. A relative CE whose reference degradation ``sum_s (E^ref_{s,c} -
    E^ref_clean)`` is not positive (at most :data:`NO_DEGRADATION` points: float noise of a
    reference the corruption does not change) is undefined and reported as NaN.
    """
    if not errors:
        raise ValueError("corruption_errors needs at least one corruption")
    ce: dict[str, float] = {}
    relative: dict[str, float] = {}
    all_errors: list[float] = []
    for corruption, row in errors.items():
        if corruption not in reference_errors:
            raise ValueError(f"corruption {corruption!r} is missing from the reference errors")
        reference = [float(e) for e in reference_errors[corruption]]
        row = [float(e) for e in row]
        if not row or len(row) != len(reference):
            raise ValueError(
                f"corruption {corruption!r}: {len(row)} severities, the reference has "
                f"{len(reference)} (need the same non-zero number)"
            )
        denominator = sum(reference)
        if denominator <= 0:
            raise ValueError(f"corruption {corruption!r}: the reference's errors sum to zero")
        ce[corruption] = 100.0 * sum(row) / denominator
        degradation = sum(e - reference_clean_error for e in reference)
        relative[corruption] = (
            100.0 * sum(e - clean_error for e in row) / degradation
            if degradation > NO_DEGRADATION
            else float("nan")
        )
        all_errors.extend(row)
    return CorruptionErrors(
        ce=ce,
        mce=sum(ce.values()) / len(ce),
        relative_ce=relative,
        relative_mce=defined_mean(list(relative.values())),
        mean_error=sum(all_errors) / len(all_errors),
    )


def parse_failure_rates(text: str) -> dict[str, float]:
    """``"rgb=0.1,depth=0.3"`` -> ``{"rgb": 0.1, "depth": 0.3}`` (``--failure-rates``); a
    malformed item is a one-line ValueError naming it."""
    rates: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            rates[name.strip()] = float(value)
        except ValueError:
            raise ValueError(
                f"{item!r} is not modality=probability (e.g. rgb=0.1,depth=0.3)"
            ) from None
    return rates


def expected_report(
    failure_rates: Mapping[str, float],
    combinations: Mapping[str, Mapping[str, float]],
    modalities: Modalities | Sequence[str],
    metrics: Iterable[str],
) -> dict[str, object]:
    """What an evaluation report records for ``--failure-rates``: the rates, the rate of
    no decision (every sensor failed) and each metric's expected value (conditional on a
    decision), from its per-combination table."""
    values = {m: expected_score(failure_rates, combinations, modalities, m) for m in metrics}
    return {
        "failure_rates": dict(failure_rates),
        "no_decision": next(iter(values.values())).p_empty if values else math.nan,
        "expected": {m: value.expected for m, value in values.items()},
    }


SHARED_RATES = (0.1, 0.2, 0.3, 0.5)  # the shared failure rates a comparison tabulates


def expected_over_seeds(
    results: Mapping[str, Mapping[str, Mapping[str, object]]],
    modalities: Modalities | Sequence[str],
    failure_rates: Mapping[str, float],
    metric: str,
) -> dict[str, object]:
    """One method's expected ``metric`` under ``failure_rates``, per seed and its mean and
    std over the seeds: ``results`` is a comparison's ``methods[<method>]`` (combination ->
    metric -> ``{"values": one per seed}``, :func:`mmanet.report.aggregate`)."""
    seeds = len(next(iter(results.values()))[metric]["values"])  # type: ignore[arg-type]
    values = [
        expected_score(
            failure_rates,
            {name: row[metric]["values"][seed] for name, row in results.items()},  # type: ignore[index]
            modalities,
        ).expected
        for seed in range(seeds)
    ]
    return seed_stats(values)


def comparison_under_failure(
    methods: Mapping[str, Mapping[str, Mapping[str, Mapping[str, object]]]],
    modalities: Modalities | Sequence[str],
    metric: str,
    failure_rates: Mapping[str, float] | None = None,
    shared: Sequence[float] = SHARED_RATES,
) -> dict[str, object]:
    """What a comparison records under ``under_failure``: each method's expected ``metric``
    (mean, std, per seed) at every shared rate of ``shared`` (each sensor failing with the
    same p) and, when given, at the per-modality ``failure_rates``."""
    mods = _modalities(modalities)
    if failure_rates is not None:
        _failure_rates(failure_rates, mods)  # a bad rate is an error before anything else
    settings = [({name: p for name in mods.names}, f"p={p:g}") for p in shared]
    if failure_rates is not None:
        settings.append(
            (dict(failure_rates), ", ".join(f"{m}={p:g}" for m, p in failure_rates.items()))
        )
    rows = []
    for rates, label in settings:
        _, p_empty = combination_probabilities(rates, mods)
        per_method = {m: expected_over_seeds(r, mods, rates, metric) for m, r in methods.items()}
        rows.append(
            {"label": label, "failure_rates": rates, "no_decision": p_empty, "methods": per_method}
        )
    return {"metric": metric, "rows": rows}


def _modalities(modalities: Modalities | Sequence[str]) -> Modalities:
    return modalities if isinstance(modalities, Modalities) else Modalities(modalities)


def _failure_rates(failure_rates: Mapping[str, float], mods: Modalities) -> list[float]:
    for name in failure_rates:
        if name not in mods.names:
            raise ValueError(
                f"failure rate given for unknown modality {name!r}; known: {', '.join(mods)}"
            )
    rates = []
    for name in mods.names:
        if name not in failure_rates:
            raise ValueError(f"modality {name!r} has no failure rate")
        p = float(failure_rates[name])
        if not 0.0 <= p <= 1.0:  # also rejects NaN
            raise ValueError(f"modality {name!r}: failure rate {p} is outside [0, 1]")
        rates.append(p)
    return rates


def _score_table(
    scores: Mapping[str, float] | Mapping[str, Mapping[str, float]],
    mods: Modalities,
    metric: str | None,
) -> dict[Mask, float]:
    """Mask -> score; keys that are not combinations of ``mods`` (e.g. "average") are ignored."""
    by_mask: dict[Mask, float] = {}
    for key, value in scores.items():
        parts = key.split("+")
        if len(set(parts)) != len(parts) or any(p not in mods.names for p in parts):
            continue
        mask = mods.mask_from_name(key)
        if mask in by_mask:
            raise ValueError(f"combination {mods.mask_name(mask)!r} appears twice in the scores")
        if metric is not None:
            if not isinstance(value, Mapping) or metric not in value:
                raise ValueError(f"combination {key!r} has no metric {metric!r}")
            value = value[metric]
        by_mask[mask] = float(value)  # type: ignore[arg-type]
    for mask in mods.combinations:
        if mask not in by_mask:
            raise ValueError(f"combination {mods.mask_name(mask)!r} is missing from the scores")
    return by_mask


def _mask_probability(mask: Mask, rates: Sequence[float]) -> float:
    return math.prod((1.0 - p) if bit else p for bit, p in zip(mask, rates, strict=True))


def _expected(rates: list[float], table: Mapping[Mask, float], mods: Modalities) -> ExpectedScore:
    weighted = 0.0
    decided = 0.0  # = 1 - P(empty), summed over the non-empty combinations for accuracy
    for mask in mods.combinations:
        probability = _mask_probability(mask, rates)
        weighted += probability * table[mask]
        decided += probability
    return ExpectedScore(
        expected=weighted / decided if decided > 0 else float("nan"),
        p_empty=math.prod(rates),
        unnormalised=weighted,
    )

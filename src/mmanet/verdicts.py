"""Verdicts: each method against the baseline, paired by seed, computed rather than judged.

For a method M and the baseline B (by default the unified baseline SF-MD, the first method
of the headline table; see :func:`default_baseline`), run on the same seeds:

* **Paired differences.** For a row of the comparison table — one combination, or a group
  of them (all combinations with k modalities, the single-modality average, the average
  over every combination) — seed s gives ``d_s = mean_M(s) − mean_B(s)``, where
  ``mean_X(s)`` is method X's metric averaged over the row's combinations on seed s (the
  same per-seed group mean as the table's std). The two runs of one seed are paired: the
  same seed, hence the same data split and initialization stream.
* **Confidence interval.** Over the n ≥ 2 seeds, ``mean(d) ± t_{(1+c)/2, n−1} · sd(d)/√n``
  with the sample standard deviation ``sd`` (n − 1 in its denominator) and Student's t
  quantile for n − 1 degrees of freedom, c = 95 %. With two seeds ``t_{0.975,1} = 12.71``:
  the interval is wide, which is what two seeds can tell.
* **Verdict.** *better* when the whole interval lies on the improving side of 0 (below 0
  for a metric its task declares lower-is-better (``"min"`` in
  :attr:`mmanet.tasks.Task.metrics`) such as the error, above 0 for accuracy-like ones
  such as the mIoU), *worse* when it lies wholly on the other side,
  *within noise* when it contains 0 (its ends included), *n/a* when a value is NaN.
* **Pooled test.** The Wilcoxon signed-rank test on every (seed, combination) difference
  ``d_{s,c} = M(s, c) − B(s, c)``, rounded to 9 decimals (float noise splits no tie):
  zero differences are dropped (Wilcoxon's convention),
  the n remaining ``|d|`` are ranked with tied values sharing their mean rank, ``W+`` and
  ``W−`` are the rank sums of the positive and negative differences and the statistic is
  ``T = min(W+, W−)``. Its two-sided p-value is exact (the distribution of ``W+`` over the
  2^n sign patterns) when n ≤ 50 and no ``|d|`` are tied, and otherwise from the normal
  approximation ``z = (W+ − n(n+1)/4) / σ``,
  ``σ² = n(n+1)(2n+1)/24 − Σ_ties (t³ − t)/48`` (t: the size of each group of tied
  values), ``p = 2 Φ(−|z|)``, without continuity correction. Verdict: *better* / *worse*
  when ``p < 1 − c`` and ``W+ − W−`` lies on the improving / the other side, otherwise
  *within noise*. The combinations of one seed share one trained model, so these pairs are
  not independent and the p-value is optimistic; the seed interval is the primary verdict.

Student's t quantile and the ranks come from SciPy, which the package already installs
(albumentations requires it); the Wilcoxon p-value is computed here, as defined above.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mmanet.report import render_table, row_groups

CONFIDENCE = 0.95
ROUNDING = 9  # decimals of the differences the Wilcoxon test ranks
BETTER, WORSE, NOISE, UNDETERMINED = "better", "worse", "within noise", "n/a"

# method -> combination -> metric -> {"values": one per seed, ...} (see report.aggregate)
Results = Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]]


@dataclass(frozen=True)
class Interval:
    """One row's paired comparison: the per-seed differences, their mean, the confidence
    interval of the mean and the verdict."""

    differences: list[float]
    mean: float
    low: float
    high: float
    verdict: str


@dataclass(frozen=True)
class Wilcoxon:
    """The signed-rank test on paired differences (see the module's docstring)."""

    n: int  # the nonzero differences
    zeros: int  # the zero differences, dropped
    w_plus: float
    w_minus: float
    statistic: float  # min(W+, W−)
    p_value: float
    method: str  # "exact" or "normal"
    verdict: str


def default_baseline(methods: Sequence[str]) -> str:
    """The unified baseline: the first method of the headline table (SF-MD) when it was run,
    otherwise the first method of the comparison."""
    from mmanet.methods import methods_in

    if not methods:
        raise ValueError("no method to take as the baseline")
    headline = methods_in("headline")
    return headline[0] if headline and headline[0] in methods else methods[0]


def side(value: float, lower_is_better: bool) -> str:
    """Which side of 0 a difference (method − baseline) lies on: better, worse or 0."""
    if value == 0:
        return NOISE
    return BETTER if (value < 0) == lower_is_better else WORSE


def verdict(low: float, high: float, lower_is_better: bool) -> str:
    """*better* / *worse* when the interval [low, high] lies wholly on the improving / the
    other side of 0, *within noise* when it contains 0, *n/a* when it is undefined."""
    if math.isnan(low) or math.isnan(high):
        return UNDETERMINED
    if low > 0 or high < 0:
        return side(low, lower_is_better)
    return NOISE


def t_quantile(probability: float, dof: int) -> float:
    """Student's t quantile: the value t with P(T ≤ t) = ``probability``, ``dof`` degrees."""
    from scipy import stats

    return float(stats.t.ppf(probability, dof))


def paired_interval(
    differences: Sequence[float], lower_is_better: bool, confidence: float = CONFIDENCE
) -> Interval:
    """The mean of the paired ``differences`` (one per seed), its Student t interval and
    the verdict."""
    n = len(differences)
    if n < 2:
        raise ValueError(f"a confidence interval needs >= 2 seeds, got {n}")
    values = [float(d) for d in differences]
    mean = statistics.fmean(values)
    half = t_quantile((1 + confidence) / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    low, high = mean - half, mean + half
    return Interval(values, mean, low, high, verdict(low, high, lower_is_better))


def seed_means(
    stats: Mapping[str, Mapping[str, Any]], names: Sequence[str], metric: str
) -> list[float]:
    """One value per seed: the metric averaged over the combinations ``names``."""
    per_combination = [stats[name][metric]["values"] for name in names]
    return [statistics.fmean(values) for values in zip(*per_combination, strict=True)]


def paired_differences(
    method: Mapping[str, Mapping[str, Any]],
    baseline: Mapping[str, Mapping[str, Any]],
    names: Sequence[str],
    metric: str,
) -> list[float]:
    """method − baseline per seed (paired by seed: the i-th value of each is seed i), each
    side averaged over the combinations ``names``."""
    ours, theirs = seed_means(method, names, metric), seed_means(baseline, names, metric)
    if len(ours) != len(theirs):
        raise ValueError(f"the method has {len(ours)} seeds, the baseline {len(theirs)}")
    return [a - b for a, b in zip(ours, theirs, strict=True)]


def wilcoxon(
    differences: Sequence[float], lower_is_better: bool, confidence: float = CONFIDENCE
) -> Wilcoxon:
    """The Wilcoxon signed-rank test on paired differences (NaN ones left out)."""
    from scipy.stats import rankdata

    # Rounded, so that float noise does not split ties (metrics are multiples of 100/N).
    values = [round(float(d), ROUNDING) for d in differences if not math.isnan(d)]
    nonzero = [d for d in values if d != 0]
    n, zeros = len(nonzero), len(values) - len(nonzero)
    if n == 0:
        return Wilcoxon(0, zeros, 0.0, 0.0, 0.0, 1.0, "exact", NOISE)
    ranks = [float(r) for r in rankdata([abs(d) for d in nonzero])]
    w_plus = sum(r for r, d in zip(ranks, nonzero, strict=True) if d > 0)
    w_minus = sum(r for r, d in zip(ranks, nonzero, strict=True) if d < 0)
    ties = Counter(abs(d) for d in nonzero).values()
    exact = n <= 50 and all(t == 1 for t in ties)
    if exact:
        p_value = 2 * _signed_rank_cdf(n, int(min(w_plus, w_minus)))
    else:
        variance = n * (n + 1) * (2 * n + 1) / 24 - sum(t**3 - t for t in ties) / 48
        z = (w_plus - n * (n + 1) / 4) / math.sqrt(variance)
        p_value = math.erfc(abs(z) / math.sqrt(2))  # 2 Φ(−|z|)
    p_value = min(1.0, p_value)
    mark = side(w_plus - w_minus, lower_is_better) if p_value < 1 - confidence else NOISE
    return Wilcoxon(
        n, zeros, w_plus, w_minus, min(w_plus, w_minus), p_value,
        "exact" if exact else "normal", mark,
    )  # fmt: skip


def _signed_rank_cdf(n: int, w: int) -> float:
    """P(W+ ≤ w) under the null for ranks 1 … n without ties: the share of the 2^n sign
    patterns whose positive ranks sum to at most w."""
    total = n * (n + 1) // 2
    counts = [1] + [0] * total  # counts[s]: the subsets of the ranks seen so far summing to s
    for rank in range(1, n + 1):
        for s in range(total, rank - 1, -1):
            counts[s] += counts[s - rank]
    return sum(counts[: w + 1]) / 2**n


def compare_to_baseline(
    results: Results,
    method: str,
    baseline: str,
    metric: str,
    max_rows: int = 16,
    confidence: float = CONFIDENCE,
    *,
    lower_is_better: bool,
) -> dict[str, Any]:
    """``method`` against ``baseline``: one :class:`Interval` per row of the comparison
    table (:func:`mmanet.report.row_groups`) and the pooled :class:`Wilcoxon` test over
    every seed and combination, as plain data (for ``results.json``); which side of 0 is
    better is ``lower_is_better``, as the task declares ``metric``."""
    lower = lower_is_better
    ours, theirs = results[method], results[baseline]
    combinations = list(theirs)
    rows = []
    for label, names in row_groups(combinations, max_rows):
        differences = paired_differences(ours, theirs, names, metric)
        if any(math.isnan(d) for d in differences):
            nan = math.nan
            interval = Interval(differences, nan, nan, nan, UNDETERMINED)
        else:
            interval = paired_interval(differences, lower, confidence)
        rows.append({"row": label, **asdict(interval)})
    pooled = [d for name in combinations for d in paired_differences(ours, theirs, [name], metric)]
    return {"rows": rows, "wilcoxon": asdict(wilcoxon(pooled, lower, confidence))}


def verdicts(
    results: Results,
    metric: str,
    baseline: str | None = None,
    max_rows: int = 16,
    confidence: float = CONFIDENCE,
    *,
    lower_is_better: bool,
) -> dict[str, Any]:
    """Every method of ``results`` against ``baseline`` (default: :func:`default_baseline`);
    ``lower_is_better``: the direction the task declares for ``metric``.

    Returns ``{"baseline", "metric", "confidence", "methods": {method: ...}}`` (see
    :func:`compare_to_baseline`), or with fewer than two seeds ``"methods": {}`` and a
    ``"note"`` saying why.
    """
    methods, lower = list(results), lower_is_better
    baseline = baseline or default_baseline(methods)
    if baseline not in results:
        raise ValueError(f"the baseline {baseline!r} is not among the methods {methods}")
    seeds = len(next(iter(results[baseline].values()))[metric]["values"])
    out: dict[str, Any] = {
        "baseline": baseline,
        "metric": metric,
        "confidence": confidence,
        "methods": {},
    }
    if seeds < 2:
        out["note"] = f"verdicts need >= 2 seeds ({seeds} run)"
        return out
    for method in methods:
        if method != baseline:
            out["methods"][method] = compare_to_baseline(
                results, method, baseline, metric, max_rows, confidence, lower_is_better=lower
            )
    return out


def format_interval(row: Mapping[str, Any]) -> str:
    """``-0.42 [-0.61, -0.23] better``: the mean difference, its interval, the verdict."""
    if row["verdict"] == UNDETERMINED:
        return UNDETERMINED
    return f"{row['mean']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}] {row['verdict']}"


def verdict_table(
    summary: Mapping[str, Any], titles: Mapping[str, str] | None = None, markdown: bool = True
) -> str:
    """Rows = the comparison table's rows and the pooled Wilcoxon test, columns = each
    method against the baseline (see :func:`verdicts`)."""
    titles = titles or {}
    name = titles.get(summary["baseline"], summary["baseline"])
    methods = list(summary["methods"])
    header = ["Combination", *[f"{titles.get(m, m)} vs {name}" for m in methods]]
    first = summary["methods"][methods[0]]["rows"]
    rows = [
        [row["row"], *[format_interval(summary["methods"][m]["rows"][i]) for m in methods]]
        for i, row in enumerate(first)
    ]
    tests = [summary["methods"][m]["wilcoxon"] for m in methods]
    label = "Wilcoxon, seeds × combinations"
    rows.append([label, *[f"p = {t['p_value']:.2g} (n {t['n']}) {t['verdict']}" for t in tests]])
    return render_table(header, rows, markdown)


def verdict_section(
    summary: Mapping[str, Any], titles: Mapping[str, str] | None = None, markdown: bool = True
) -> str:
    """A line saying what the verdicts are, then their table (:func:`verdict_table`); with
    fewer than 2 seeds or no other method, the line saying why there are none."""
    if not summary["methods"]:
        return f"{summary.get('note', 'no method besides the baseline')}."
    titles = titles or {}
    name = titles.get(summary["baseline"], summary["baseline"])
    level = round(100 * summary["confidence"])
    caption = (
        f"Method − {name} ({summary['metric']}, percentage points), paired by seed: mean "
        f"[{level} % t interval over seeds] and the verdict; last row: the Wilcoxon "
        "signed-rank test over seeds × combinations (see docs/verdicts.md)."
    )
    return f"{caption}\n\n{verdict_table(summary, titles, markdown)}"

"""Does training-time corruption help? A markdown table from two `mmanet compare --corrupt`
folders of the same methods, seeds and corruptions, one trained with `data.corrupt`: per
method, the clean error and each corruption's mean error over its severities, without and
with the augmentation, and the difference paired by seed with its 95 % t interval and the
verdict (mmanet.verdicts).

    python scripts/training_corruption_table.py runs/robustness_cls runs/robustness_cls_aug
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mmanet.verdicts import paired_interval


def per_seed(result: dict, label: str | None) -> list[float]:
    """A method's clean error (label None) or a corruption's mean error over its
    severities, one value per seed."""
    if label is None:
        return result["clean_error"]["values"]
    by_severity = [stat["values"] for stat in result["errors"][label].values()]
    return [statistics.fmean(values) for values in zip(*by_severity, strict=True)]


def table(plain: dict, augmented: dict, titles: dict[str, str]) -> str:
    methods = [m for m in augmented["methods"] if m in plain["methods"]]
    labels = [None, *augmented["labels"]]
    lines = [
        "| Method | Inputs | Without | With `data.corrupt` | With − without (paired by seed) |",
        "|---|---|---:|---:|---|",
    ]
    for method in methods:
        for label in labels:
            before = per_seed(plain["methods"][method], label)
            after = per_seed(augmented["methods"][method], label)
            interval = paired_interval(
                [a - b for a, b in zip(after, before, strict=True)], lower_is_better=True
            )
            lines.append(
                f"| {titles.get(method, method)} | {label or 'clean'} | "
                f"{statistics.fmean(before):.2f} | {statistics.fmean(after):.2f} | "
                f"{interval.mean:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}] "
                f"{interval.verdict} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plain", type=Path, help="compare folder trained without data.corrupt")
    parser.add_argument("augmented", type=Path, help="the same, trained with data.corrupt")
    args = parser.parse_args()
    plain = json.loads((args.plain / "results.json").read_text())
    augmented = json.loads((args.augmented / "results.json").read_text())
    if plain["corruptions"]["labels"] != augmented["corruptions"]["labels"]:
        raise SystemExit("the two comparisons were corrupted differently")
    if plain["seeds"] != augmented["seeds"]:
        raise SystemExit("the two comparisons have different seeds")
    print(table(plain["corruptions"], augmented["corruptions"], augmented.get("titles", {})))


if __name__ == "__main__":
    main()

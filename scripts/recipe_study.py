"""One recipe for a user's own data, chosen on the validation splits of three public datasets.

A small, explicit grid of candidate recipes (below, ``CANDIDATES``), each trained for SF-MD
and MMANet on every dataset of ``configs/public/`` (breast_cancer, digits_views,
japanese_vowels) and scored on the **validation** split only (the last epoch's model, as
the shipped configs test). The teacher of MMANet is trained once per dataset and seed with
the dataset's current public config and shared by every candidate, so the candidates differ
only in the student's recipe.

Selection rule (fixed before any candidate was run): the candidate with the lowest mean,
over the three datasets and the seeds, of the mean of SF-MD's and MMANet's val average
error (over every combination of views); ties (within 0.05 points) go to the lower MMANet
val error. Both methods count because the recipe serves the baseline as much as MMANet:
choosing on MMANet alone would tilt the later comparison towards it. The test split is
never read.

Every run is reused when finished (``OUT/<dataset>/<candidate>/seed-<s>/<method>``), so an
interrupted invocation is continued by running it again; two invocations on different
datasets can run side by side. ``--page`` writes ``DOCS/recipe.json`` and the val table of
``DOCS/recipe.md`` from whatever is finished.

Usage: python scripts/recipe_study.py [--out runs/recipe] [--datasets ...] [--seeds 0 1]
           [--candidates A B C D] [--page] [--docs docs/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

DATASETS = ("breast_cancer", "digits_views", "japanese_vowels")
METHODS = ("sf_md", "mmanet")
METRIC = "error"

# The manifest example's recipe (the bundled demo's), as overrides of a public config; the
# image encoder (digits_views: CNN [16, 32]) is the same in both recipes, so only the
# vector datasets get the manifest's MLP encoder.
_MANIFEST_OPTIM = {
    "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4, "epochs": 60,
    "scheduler": "step", "warmup_epochs": 5, "milestones": [30, 45], "gamma": 0.1,
}  # fmt: skip
_MANIFEST_MODEL = {"head_widths": [128, 64], "head_dropout": 0.1}
_MANIFEST_MLP = {"encoder": {"type": "mlp", "widths": [128, 64], "dropout": 0.0}}

# name -> (description, overrides of configs/public/<dataset>.yaml, MLP-encoder overrides)
CANDIDATES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "A": (
        "public configs as shipped: Adam lr 1e-3, wd 1e-4, 30 epochs, cosine (2 warm-up), "
        "batch 32, α 3, β 0.5, MAR warm-up 5, MLP [64, 32] dropout 0.1, head [64]",
        {},
        {},
    ),
    "B": (
        "manifest example (the demo's): SGD lr 0.05 momentum 0.9, wd 5e-4, 60 epochs, step "
        "at 30 / 45 (×0.1, 5 warm-up), batch auto, α 3, β 0.5, MAR warm-up 5, "
        "MLP [128, 64] no dropout, head [128, 64]",
        {"optim": _MANIFEST_OPTIM, "model": _MANIFEST_MODEL, "data": {"batch_size": "auto"}},
        {"model": _MANIFEST_MLP},
    ),
    "C": ("A with lr 4e-3 (the tuned lr was 3-8× the shipped one)", {"optim": {"lr": 4.0e-3}}, {}),
    "D": (
        "A with lr 4e-3 and α 0.5 (tuned α ≈ 0.45 on two of three datasets)",
        {"optim": {"lr": 4.0e-3}, "method": {"alpha": 0.5}},
        {},
    ),
}


def public_config(dataset: str) -> Path:
    import mmanet

    return Path(mmanet.__file__).parent / "configs" / "public" / f"{dataset}.yaml"


def layer(dataset: str, candidate: str) -> dict[str, Any]:
    from mmanet.config import deep_merge, load_yaml

    _, overrides, mlp = CANDIDATES[candidate]
    runtime = {"threads": 1, "progress": False, "tensorboard": False, "data": {"num_workers": 0}}
    merged = deep_merge(overrides, runtime)
    encoder = load_yaml(public_config(dataset))["model"]["encoder"]["type"]
    if encoder == "mlp":
        merged = deep_merge(merged, mlp)
    return merged


def run_dataset(dataset: str, args: argparse.Namespace) -> None:
    from mmanet.config import build_config
    from mmanet.data import build_data
    from mmanet.experiment import run_method

    root = Path(args.out) / dataset
    config = public_config(dataset)
    data = build_data(build_config(config, layer(dataset, "A")).data)
    for seed in args.seeds:
        teacher_out = root / "teacher"
        start = time.monotonic()
        run_method("teacher", seed, teacher_out, config, layer(dataset, "A"), data, None, "val",
                   False)  # fmt: skip
        print(f"[{time.strftime('%H:%M:%S')}] {dataset} seed {seed}: teacher "
              f"({time.monotonic() - start:.0f} s)", flush=True)  # fmt: skip
        teacher = teacher_out / f"seed-{seed}" / "teacher"
        for candidate in args.candidates:
            for method in METHODS:
                start = time.monotonic()
                report = run_method(
                    method, seed, root / candidate, config, layer(dataset, candidate), data,
                    teacher if method == "mmanet" else None, "val", False,
                )  # fmt: skip
                print(
                    f"[{time.strftime('%H:%M:%S')}] {dataset} seed {seed} {candidate} {method}: "
                    f"val average error {report['average'][METRIC]:.2f} "
                    f"({time.monotonic() - start:.0f} s)",
                    flush=True,
                )


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Val average errors of every finished run: candidate -> dataset -> method -> seeds."""
    table: dict[str, Any] = {}
    for candidate in CANDIDATES:
        for dataset in DATASETS:
            for method in METHODS:
                for seed in args.seeds:
                    path = (Path(args.out) / dataset / candidate / f"seed-{seed}" / method
                            / "results_val.json")  # fmt: skip
                    if path.is_file():
                        value = json.loads(path.read_text())["average"][METRIC]
                        cell = table.setdefault(candidate, {}).setdefault(dataset, {})
                        cell.setdefault(method, {})[str(seed)] = value
    return table


def score(table: dict[str, Any], seeds: list[int]) -> dict[str, dict[str, float]]:
    """The rule's numbers for each candidate finished on every dataset, method and seed."""
    scores = {}
    for candidate, per in table.items():
        complete = all(
            len(per.get(d, {}).get(m, {})) == len(seeds) for d in DATASETS for m in METHODS
        )
        if not complete:
            continue
        means = {m: statistics.fmean(statistics.fmean(per[d][m].values()) for d in DATASETS)
                 for m in METHODS}  # fmt: skip
        scores[candidate] = {"both": statistics.fmean(means.values()), **means}
    return scores


def choose(scores: dict[str, dict[str, float]]) -> str | None:
    if not scores:
        return None
    best = min(s["both"] for s in scores.values())
    tied = [c for c, s in scores.items() if s["both"] <= best + 0.05]
    return min(tied, key=lambda c: scores[c]["mmanet"])


def page(args: argparse.Namespace) -> None:
    """``DOCS/recipe.md`` and ``.json`` from the finished runs (val split only)."""
    from mmanet.io import atomic_write_json

    table = collect(args)
    scores = score(table, args.seeds)
    chosen = choose(scores)
    seeds = ", ".join(str(s) for s in args.seeds)
    head = " | ".join(f"{d} SF-MD | {d} MMANet" for d in DATASETS)
    rule_columns = "mean SF-MD | mean MMANet | **rule: mean of both**"
    rows = [f"| Candidate | {head} | {rule_columns} |", "|---|" + "---:|" * (2 * len(DATASETS) + 3)]
    seed_rows = [f"| Candidate | seed | {head} |", "|---|---:|" + "---:|" * (2 * len(DATASETS))]
    for candidate in CANDIDATES:
        per = table.get(candidate, {})
        cells = []
        for d in DATASETS:
            for m in METHODS:
                values = list(per.get(d, {}).get(m, {}).values())
                cells.append(f"{statistics.fmean(values):.2f}" if values else "–")
        s = scores.get(candidate)
        tail = (f"{s['sf_md']:.2f} | {s['mmanet']:.2f} | **{s['both']:.2f}**" if s
                else "– | – | –")  # fmt: skip
        mark = " (chosen)" if candidate == chosen else ""
        rows.append(f"| {candidate}{mark} | {' | '.join(cells)} | {tail} |")
        for seed in args.seeds:
            cells = [
                f"{per[d][m][str(seed)]:.2f}"
                if str(seed) in per.get(d, {}).get(m, {}) else "–"
                for d in DATASETS for m in METHODS
            ]  # fmt: skip
            seed_rows.append(f"| {candidate} | {seed} | {' | '.join(cells)} |")
    grid = [f"- **{c}**: {v[0]}." for c, v in CANDIDATES.items()]
    ranked = sorted(scores, key=lambda c: scores[c]["both"])
    runner = ranked[1] if len(ranked) > 1 else None
    choice = (
        f"**Chosen: {chosen}** ({CANDIDATES[chosen][0].split(' (')[0]}), rule value "
        f"{scores[chosen]['both']:.2f}"
        + (f"; next {runner} at {scores[runner]['both']:.2f}" if runner else "")
        + ". It is now `configs/manifest/example.yaml` and the three `configs/public/*.yaml`."
        if chosen
        else "**No candidate has finished every run yet.**"
    )
    lines = [
        "# One recipe for a user's own data, chosen on three public datasets' val splits",
        "",
        "`python scripts/recipe_study.py` (then `--page`): a small grid of candidate recipes, "
        "each trained for SF-MD and MMANet on the three public datasets of `configs/public/` "
        "(breast_cancer: tabular views; digits_views: 4 × 4 image views; japanese_vowels: "
        "short time-series windows; none bundled), scored on the **validation** split only. "
        "The test split is not read here; the chosen recipe's test errors are in "
        "[own_data.md](own_data.md) (its *shipped* columns).",
        "",
        "## The grid",
        "",
        "The two recipes the project shipped (A: the public configs; B: "
        "`configs/manifest/example.yaml`, the bundled demo's) and two variations of A that the "
        "tuning results of [own_data.md](own_data.md) (the run before this study) suggested: "
        "a learning rate 4× higher (the tuned lrs were 3.2–8.5× the shipped 1e-3) and α = 0.5 "
        "(tuned α 0.45 and 0.47 on two datasets, 27 on the third). Four candidates, not a "
        "search:",
        "",
        *grid,
        "",
        "What stays per dataset: the encoder type the input's shape asks for (digits_views' "
        "views are (1, 4, 4) images: the CNN [16, 32] in every candidate, the manifest "
        "example's image encoder; the other two are vectors or short windows: the MLP) and "
        "the split. Everything else is the candidate's.",
        "",
        "Each run: one seed of "
        f"{seeds}; the last epoch's model (no validation during training, as shipped); its "
        "error (%) on the val split averaged over every combination of views. MMANet distils "
        "from a teacher trained once per dataset and seed with candidate A's config (the "
        "public config before this study) and shared by every candidate, so candidates differ "
        "only in the student's recipe.",
        "",
        "## The rule (fixed before any run)",
        "",
        "The lowest mean, over the three datasets and the seeds, of the mean of SF-MD's and "
        "MMANet's val average error; a tie (within 0.05 points) goes to the lower MMANet val "
        "error. Both methods count because the recipe serves the baseline as much as MMANet: "
        "choosing on MMANet alone would tilt the later comparison towards it.",
        "",
        f"## Val table (average error over the combinations, %, mean over seeds {seeds})",
        "",
        *rows,
        "",
        choice,
        "",
        "Per seed:",
        "",
        *seed_rows,
        "",
        "## Reading it",
        "",
        "- C and D train SF-MD identically (α only weighs MMANet's distillation term), so "
        "their SF-MD columns match, a check that the runs are deterministic.",
        "- Two seeds and one split: differences of a few tenths of a point between candidates "
        "are within the seed-to-seed spread of the per-seed table; the rule orders the "
        "candidates, it does not show that the winner is better. The test-split comparison "
        "with verdicts is [own_data.md](own_data.md).",
        "- D's lead over C is MMANet's (SF-MD is the same): lower on digits_views and "
        "breast_cancer, higher on japanese_vowels, where `mmanet tune` had found α 27; one "
        "recipe gives up that dataset's α for the other two.",
        "- B changes many values at once (optimizer, schedule, epochs, batch rule, widths); "
        "it was tried as the demo's recipe, not value by value.",
        "",
        f"Numbers: `recipe.json`; runs under `{args.out}/`.",
    ]
    docs = Path(args.docs)
    (docs / "recipe.md").write_text("\n".join(lines) + "\n")
    atomic_write_json(docs / "recipe.json", {
        "seeds": args.seeds, "split": "val", "metric": f"average {METRIC} (%) over every "
        "combination, last epoch", "candidates": {c: v[0] for c, v in CANDIDATES.items()},
        "val": table, "scores": scores, "chosen": chosen,
        "rule": "lowest mean over datasets and seeds of the mean of SF-MD's and MMANet's val "
        "average error; ties within 0.05 points to the lower MMANet val error",
    })  # fmt: skip
    print("\n".join(rows))
    print(f"chosen: {chosen}; seeds {seeds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/recipe")
    parser.add_argument("--docs", default="docs/results")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    parser.add_argument("--page", action="store_true", help="the val table from OUT only")
    args = parser.parse_args()
    if args.page:
        page(args)
        return
    for dataset in args.datasets:
        run_dataset(dataset, args)


if __name__ == "__main__":
    main()

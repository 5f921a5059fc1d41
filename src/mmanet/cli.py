"""The ``mmanet`` command: train, evaluate, demo, compare, tune, export, predict.

Parsing the command line imports neither torch nor the library's models: each command
imports what it needs when it runs, and the choices of an option are read from the
registries only when they are shown. Every command loads the config's ``imports`` (the
user's modules) before it looks up any registered name: a method, task or model of the
user's is known to every command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from mmanet.errors import (
    USER_ERRORS,
    ConfigError,
    DataError,
    ExportError,
    TrainingError,
    TrainingInterrupted,
)


class LazyChoices:
    """An option's choices, read from a registry when argparse shows them. argparse does
    not check them: the command does, once the config's ``imports`` (which may register
    more) are loaded."""

    def __init__(self, names: Callable[[], list[str]]) -> None:
        self._names = names

    def __contains__(self, value: object) -> bool:
        return True  # checked by the command, after the imports

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def demo_tasks() -> list[str]:
    """The registered tasks that have a bundled demo."""
    from mmanet.registry import TASKS

    return [name for name, task in TASKS.items() if task.demo_config]


def _overrides_help() -> str:
    return "config overrides as key=value, e.g. optim.epochs=20 method.alpha=10"


_BASELINE_HELP = (
    "the method every other is judged against with >= 2 seeds (default: sf_md when run, "
    "else the first method; see docs/verdicts.md)"
)


def cmd_train(args: argparse.Namespace) -> int:
    from mmanet.config import build_config
    from mmanet.methods import get_method

    config = build_config(args.config, args.overrides)
    if get_method(config.method.name).per_combination and config.method.combination is None:
        return _train_customized(args, config)
    from mmanet.engine import Trainer, distributed

    try:
        trainer = Trainer(config)
        report = trainer.fit(args.resume, args.stop_after, args.overwrite)
    finally:
        distributed.shutdown()  # torchrun: leave the process group together
    if distributed.rank_from_env() != 0:
        return 0
    if report is None:
        again = ["mmanet", "train", *(["--config", args.config] if args.config else [])]
        print(
            f"stopped after epoch {trainer.epoch} of {config.optim.epochs}; continue with: "
            + " ".join([*again, "--resume", *args.overrides])
        )
        return 0
    _print_report(report)
    print(f"results: {Path(config.out) / 'results_test.json'}")
    return 0


def _train_customized(args: argparse.Namespace, config) -> int:
    """A per-combination method without a combination: one model per combination."""
    from mmanet.config import parse_overrides
    from mmanet.data import build_data
    from mmanet.experiment import run_customized
    from mmanet.io import atomic_write_json

    out = Path(config.out)
    report = run_customized(
        config.seed,
        out,
        args.config,
        parse_overrides(args.overrides),
        build_data(config.data),
        progress=config.progress,
        method=config.method.name,
    )
    atomic_write_json(out / "results_test.json", report)
    _print_report(report)
    print(f"results: {out / 'results_test.json'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mmanet.config import build_config
    from mmanet.data import build_data
    from mmanet.engine import evaluate_split, load_network, resolve_device
    from mmanet.engine.results import evaluation_path
    from mmanet.io import atomic_write_json
    from mmanet.tasks import build_task

    run = Path(args.run)
    config = build_config(run / "config.yaml", args.overrides)
    rates = None if args.failure_rates is None else _failure_rates(args.failure_rates)
    data = build_data(config.data)
    if args.corrupt:  # a bad --corrupt spec fails before any evaluation
        from mmanet.corruption_eval import corruption_targets

        corruption_targets(data, args.corrupt)
    device = resolve_device(config.device)
    model, meta = load_network(
        args.checkpoint or run, modalities=data.modalities, model=config.model, select=args.select
    )
    task = build_task(data, config).to(device)
    results = evaluate_split(
        model.to(device),
        data,
        task,
        args.split,
        device,
        config.data.eval_batch_size,
        config.data.num_workers,
    )
    checkpoint = Path(meta["checkpoint"])
    report = {
        "method": config.method.name,
        "split": args.split,
        "checkpoint": str(checkpoint),
        "epoch": meta.get("epoch"),
        "overrides": list(args.overrides),
        **results,
    }
    if rates is not None:
        report["under_failure"] = _under_failure(rates, report, data.modalities)
    if args.corrupt:
        from mmanet.corruption_eval import evaluate_corruptions

        report["corruptions"] = evaluate_corruptions(
            model,
            data,
            task,
            args.corrupt,
            args.split,
            device,
            config.data.eval_batch_size,
            config.data.num_workers,
            seed=args.corrupt_seed,
            progress=config.progress,
        )
    out = evaluation_path(run, args.split, checkpoint, args.overrides)
    atomic_write_json(out, report)
    _print_report(report)
    if "under_failure" in report:
        _print_under_failure(report["under_failure"])
    from mmanet.reliability_figure import print_calibration

    print_calibration(report, out, figures=not args.no_figures)
    if "det" in report and not args.no_figures:
        from mmanet.spoofing_report import write_det_figure

        print(f"DET curves: {write_det_figure(report, out.with_name(out.stem + '-det.png'))}")
    if "corruptions" in report:
        from mmanet.corruption_eval import print_corruptions

        print_corruptions(report["corruptions"], out, figures=not args.no_figures)
    print(f"checkpoint {checkpoint} (epoch {meta.get('epoch')}); results: {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mmanet.config import build_config, parse_overrides
    from mmanet.experiment import compare, demo_config_path
    from mmanet.methods import methods_in
    from mmanet.registry import TASKS

    config_path = args.config or demo_config_path(args.task)
    overrides = parse_overrides(args.overrides)
    base = build_config(config_path, overrides)  # its imports first: they may register the task
    task = TASKS.get(args.task)
    methods = methods_in(task.demo_methods)
    seeds = list(range(args.seeds if args.seeds is not None else task.demo_seeds))
    jobs = args.jobs or default_jobs(base.threads, seeds, methods)
    out = Path(args.out or f"runs/demo_{args.task}")
    summary = compare(
        methods,
        seeds=seeds,
        out=out,
        config_path=config_path,
        overrides=overrides,
        split=args.split,
        progress=not args.no_progress,
        jobs=jobs,
        **_backend_options(args),
        baseline=args.baseline,
    )
    _print_comparison(summary, args.split)
    print(f"\nwritten: {out / 'results.md'}, {out / 'results.json'}")
    return 0


def _print_comparison(summary: dict, split: str) -> None:
    """A comparison's table (best per row as the task's metric direction says) and its
    verdicts (each method against the baseline), or why there are none."""
    from mmanet.report import comparison_table
    from mmanet.verdicts import verdict_section

    metric = summary["metric"]
    print(f"\n{metric} (%) on the {split} split, {len(summary['seeds'])} seed(s):\n")
    table = comparison_table(
        summary["methods"],
        metric,
        markdown=False,
        titles=summary["titles"],
        lower_is_better=summary["lower_is_better"],
    )
    print(table)
    judged = summary.get("verdicts")
    if judged:
        print(f"\n{verdict_section(judged, summary['titles'], markdown=False)}")
    under_failure = summary.get("under_failure")
    if under_failure:
        from mmanet.report import failure_table

        table = failure_table(
            under_failure,
            summary["titles"],
            lower_is_better=summary["lower_is_better"],
            markdown=False,
        )
        print(f"\nexpected {metric} (%) when each sensor fails independently:\n\n{table}")
    corrupted = summary.get("corruptions")
    if corrupted:
        from mmanet.corruption_compare import ce_table

        reference = summary["titles"].get(corrupted["reference"], corrupted["reference"])
        table = ce_table(corrupted, summary["titles"], markdown=False)
        print(f"\ncorruption error (CE, %) against {reference}, lower is better:\n\n{table}")


def default_jobs(threads: int, seeds: Sequence[int], methods: Sequence[str]) -> int:
    """Runs trained at a time: as many as the CPUs hold at ``threads`` each (one when the
    config leaves torch's thread count at its default), at most one per run."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if threads <= 0:
        return 1
    return max(1, min((cores or 1) // threads, len(seeds) * len(methods)))


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the runs of ``compare``, ``demo`` and ``tune`` are trained (docs/cluster.md)."""
    parser.add_argument(
        "--backend",
        default="process",
        choices=["process", "ray"],
        help="process: --jobs spawned processes on this machine (default); ray: Ray tasks, "
        "--jobs at a time (pip install -e '.[cluster]')",
    )
    parser.add_argument(
        "--address", help="with --backend ray: an existing Ray cluster (default: a local Ray)"
    )
    parser.add_argument(
        "--gpus-per-run",
        type=float,
        default=0.0,
        help="with --backend ray: GPUs each run reserves, e.g. 0.5 (two runs per GPU; "
        "set device=cuda); default 0",
    )


def _backend_options(args: argparse.Namespace) -> dict:
    """The keywords of ``compare`` and ``tune`` for :func:`_add_backend_arguments`'s options."""
    return {"backend": args.backend, "address": args.address, "gpus_per_run": args.gpus_per_run}


def cmd_compare(args: argparse.Namespace) -> int:
    from mmanet.config import build_config, parse_overrides
    from mmanet.experiment import compare, demo_config_path, resolve_methods
    from mmanet.registry import TASKS

    out = Path(args.out or f"runs/compare_{args.task}")
    config_path = args.config or demo_config_path(args.task)
    overrides = parse_overrides(args.overrides)
    build_config(config_path, overrides)  # its imports first: --methods may name the user's
    TASKS.check(args.task)
    rates = None if args.failure_rates is None else _failure_rates(args.failure_rates)
    summary = compare(
        resolve_methods(args.methods),
        seeds=list(range(args.seeds)),
        out=out,
        config_path=config_path,
        overrides=overrides,
        split=args.split,
        progress=not args.no_progress,
        figures=not args.no_figures,
        jobs=args.jobs,
        **_backend_options(args),
        baseline=args.baseline,
        failure_rates=rates,
        corruptions=args.corrupt,
        corrupt_seed=args.corrupt_seed,
    )
    _print_comparison(summary, args.split)
    written = ["results.md", "results.json", *summary.get("figures", [])]
    print(f"\nwritten in {out}: {', '.join(written)}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from mmanet.tune import tune

    out = Path(args.out or f"runs/tune_{args.method}")
    summary = tune(
        args.config,
        args.overrides,
        out,
        trials=args.trials,
        method=args.method,
        space=args.space,
        storage=args.storage,
        seed=args.seed,
        timeout=args.timeout,
        pruner=args.pruner,
        jobs=args.jobs,
        **_backend_options(args),
    )
    if summary["best"] is None:
        raise TrainingError(f"no trial completed in {out} (see trials.csv); no best.yaml")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mmanet.export import export_onnx, onnx_summary

    out = Path(args.out or Path(args.checkpoint) / "model.onnx")
    sidecar = export_onnx(
        args.checkpoint,
        out,
        opset=args.opset,
        select=args.select,
        thresholds=not args.no_thresholds,
    )
    print(onnx_summary(sidecar))
    print(f"written: {out}, {out.name}.json")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from mmanet.predict import predict_files, predict_manifest

    files = _modality_files(args.modality_files)
    if args.manifest:
        if files:
            raise DataError("predict: give either --manifest or modality files, not both")
        out = Path(args.out or "predictions.csv")
        count = predict_manifest(
            args.checkpoint,
            Path(args.manifest),
            out,
            args.select,
            thresholds=not args.no_thresholds,
            point=args.operating_point,
        )
        print(f"{count} predictions written: {out}")
        return 0
    result, task = predict_files(
        args.checkpoint,
        files,
        args.select,
        thresholds=not args.no_thresholds,
        point=args.operating_point,
    )
    used, missing = result["modalities_used"], result["modalities_missing"]
    print(f"modalities used: {', '.join(used)}; missing: {', '.join(missing) or 'none'}")
    if "decision" in result:  # anti-spoofing
        from mmanet.deployment_thresholds import decision_line

        print(decision_line(result))
    for line in task.write_prediction(result, Path(args.out) if args.out else None):
        print(line)
    return 0


def _modality_files(tokens: Sequence[str]) -> dict[str, str]:
    """``["--rgb", "a.png", "--ir", "c.png"]`` -> ``{"rgb": "a.png", "ir": "c.png"}``."""
    files: dict[str, str] = {}
    items = list(tokens)
    while items:
        flag = items.pop(0)
        if not flag.startswith("--") or not items or items[0].startswith("--"):
            raise DataError(f"predict: expected --<modality> FILE, got {flag!r}")
        files[flag[2:]] = items.pop(0)
    return files


def _failure_rates(text: str) -> dict[str, float]:
    from mmanet.robustness import parse_failure_rates

    try:
        return parse_failure_rates(text)
    except ValueError as err:
        raise ConfigError(f"--failure-rates: {err}") from None


def _under_failure(rates: dict[str, float], report: dict, modalities: list[str]) -> dict:
    """``--failure-rates``: the expected metrics when each sensor fails independently."""
    from mmanet.robustness import expected_report

    try:
        return expected_report(rates, report["combinations"], modalities, report["metrics"])
    except ValueError as err:
        raise ConfigError(f"--failure-rates: {err}") from None


def _print_under_failure(summary: dict) -> None:
    rates = ", ".join(f"{m}={p:g}" for m, p in summary["failure_rates"].items())
    values = ", ".join(f"{m} {v:.2f}" for m, v in summary["expected"].items())
    print(
        f"expected when sensors fail independently ({rates}): {values} (%, given a decision); "
        f"no decision (every sensor failed) {100 * summary['no_decision']:.2f} % of the time"
    )


def _print_report(report: dict) -> None:
    from mmanet.report import metrics_table

    if "operating_points" in report:  # anti-spoofing: its own columns, the threshold stated
        from mmanet.spoofing_report import operating_points_table

        print(operating_points_table(report))
        return
    print(metrics_table(report, report["metrics"]))


def _select(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--select",
        choices=["best", "last"],
        help="which checkpoint of a run: best (validation) or last (default: the run's "
        "result, best when it validated)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmanet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tasks = LazyChoices(demo_tasks)

    train = sub.add_parser("train", help="train one method (teacher, sf_md, ..., mmanet)")
    train.add_argument("--config", help="YAML config file")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in out= from its last checkpoint"
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace the run that out= holds (its files)"
    )
    train.add_argument(
        "--stop-after", type=int, metavar="EPOCH", help="stop after this epoch (resume later)"
    )
    train.add_argument("overrides", nargs="*", help=_overrides_help())
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a run over every modality combination")
    evaluate.add_argument("--run", required=True, help="run folder (holds config.yaml)")
    evaluate.add_argument("--checkpoint", help="a checkpoint folder (default: the run's)")
    _select(evaluate)
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.add_argument(
        "--failure-rates",
        metavar="M=P,...",
        help="also the expected metrics when each modality fails independently with its "
        "probability, e.g. rgb=0.1,depth=0.3 (docs/evaluation.md)",
    )
    evaluate.add_argument(
        "--corrupt",
        action="append",
        metavar="CORRUPTION",
        help="also evaluate under corrupted inputs: name[:severity][@modality], or all "
        "(repeatable; e.g. gaussian_noise@rgb, holes:3@depth; docs/evaluation.md)",
    )
    evaluate.add_argument(
        "--corrupt-seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the corruptions' random draws (default %(default)s)",
    )
    evaluate.add_argument(
        "--no-figures",
        action="store_true",
        help="no figures (reliability diagrams, corruption curves, DET curves): tables only",
    )
    evaluate.add_argument("overrides", nargs="*", help=_overrides_help())
    evaluate.set_defaults(func=cmd_evaluate)

    demo = sub.add_parser("demo", help="the paper's ablations on a bundled dataset")
    demo.add_argument(
        "--seeds", type=int, help="number of seeds (0, 1, ...); default: the task's demo's"
    )
    demo.add_argument(
        "--jobs",
        type=int,
        help="runs trained at a time, each in its own process (default: as the CPUs allow)",
    )
    _add_backend_arguments(demo)
    demo.add_argument(
        "--task",
        default="classification",
        choices=tasks,
        metavar="TASK",  # not the choices: they are read from the registry when shown
        help="a task with a bundled demo: %(choices)s (default %(default)s)",
    )
    demo.add_argument("--out", help="output folder (default runs/demo_<task>)")
    demo.add_argument("--config", help="YAML config (default: the bundled demo config)")
    demo.add_argument("--split", default="test", choices=["val", "test"])
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument("--baseline", help=_BASELINE_HELP)
    demo.add_argument("overrides", nargs="*", help=_overrides_help())
    demo.set_defaults(func=cmd_demo)

    compare = sub.add_parser(
        "compare",
        help="train and evaluate a list of methods over seeds; write the paper's tables",
    )
    compare.add_argument(
        "--config", help="dataset YAML config (default: the bundled demo of --task)"
    )
    compare.add_argument(
        "--task",
        default="classification",
        choices=tasks,
        metavar="TASK",
        help="the bundled demo config of this task: %(choices)s (default %(default)s)",
    )
    compare.add_argument(
        "--methods",
        default="all",
        help="a table (comparison, distillation, regularization, ablation, headline), all "
        "(default), or comma-separated names, e.g. sf_md,rfnet,mmanet",
    )
    compare.add_argument("--seeds", type=int, default=1, help="number of seeds (0, 1, ...)")
    compare.add_argument("--out", help="output folder (default runs/compare_<task>)")
    compare.add_argument("--split", default="test", choices=["val", "test"])
    compare.add_argument("--no-figures", action="store_true", help="tables only")
    compare.add_argument(
        "--corrupt",
        action="append",
        metavar="CORRUPTION",
        help="also evaluate every run under this corruption, name[:severity][@modality] or "
        "all (repeatable; docs/evaluation.md#corrupted-inputs): CE and mCE against the baseline",
    )
    compare.add_argument(
        "--corrupt-seed", type=int, default=0, help="seed of the corruptions' draws (default 0)"
    )
    compare.add_argument(
        "--failure-rates",
        metavar="M=P,...",
        help="also tabulate each method's expected metric when each modality M fails "
        "independently with probability P (e.g. rgb=0.1,depth=0.3); shared rates are "
        "always tabulated",
    )
    compare.add_argument(
        "--jobs", type=int, default=1, help="runs trained at a time, each in its own process"
    )
    _add_backend_arguments(compare)
    compare.add_argument("--no-progress", action="store_true", help="no progress bars")
    compare.add_argument("--baseline", help=_BASELINE_HELP)
    compare.add_argument("overrides", nargs="*", help=_overrides_help())
    compare.set_defaults(func=cmd_compare)

    tune = sub.add_parser(
        "tune",
        help="search hyperparameters on the val split (Optuna); resumable",
        epilog="e.g. mmanet tune --config configs/mfeat/demo.yaml --trials 30 --out runs/tune",
    )
    tune.add_argument("--config", help="YAML config every trial starts from")
    tune.add_argument("--method", default="mmanet", help="the method to tune (default mmanet)")
    tune.add_argument(
        "--trials", type=int, default=20, help="finished trials the study holds (default 20)"
    )
    tune.add_argument(
        "--space",
        help="YAML search space: key: {low, high, log} | {choices: [...]} "
        "(default: the method's, docs/tune.md)",
    )
    tune.add_argument("--out", help="output folder (default runs/tune_<method>)")
    tune.add_argument(
        "--storage", help="Optuna RDB URL for many workers (default sqlite:///<out>/study.db)"
    )
    tune.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    tune.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    tune.add_argument(
        "--pruner",
        default="median",
        choices=["median", "halving", "none"],
        help="stop weak trials early on their per-epoch val value (default %(default)s)",
    )
    tune.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trials trained at a time, each in its own process (default 1)",
    )
    _add_backend_arguments(tune)
    tune.add_argument("overrides", nargs="*", help=_overrides_help())
    tune.set_defaults(func=cmd_tune)

    export = sub.add_parser("export", help="export the deployment network (ONNX)")
    export.add_argument("--checkpoint", required=True, help="run or checkpoint folder")
    export.add_argument("--format", default="onnx", choices=["onnx"])
    export.add_argument("--out", help="output file (default <checkpoint>/model.onnx)")
    export.add_argument("--opset", type=int, default=17)
    export.add_argument(
        "--no-thresholds",
        action="store_true",
        help="anti-spoofing: no per-combination decision thresholds in the sidecar (they "
        "are set on the run's validation split, which must otherwise be readable)",
    )
    _select(export)
    export.set_defaults(func=cmd_export)

    predict = sub.add_parser(
        "predict",
        help="predict from files: --<modality> FILE for any subset, or --manifest CSV",
        epilog="e.g. mmanet predict --checkpoint runs/casia_surf/mmanet --rgb a.png --ir c.png",
    )
    predict.add_argument("--checkpoint", required=True, help="run or checkpoint folder")
    predict.add_argument("--manifest", help="CSV, one path column per modality (classification)")
    predict.add_argument("--out", help="JSON / PNG (segmentation) / CSV (--manifest) to write")
    predict.add_argument(
        "--operating-point",
        choices=["val_eer", "apcer_5", "apcer_1"],
        help="anti-spoofing: the threshold of the combination received, set on validation "
        "at the EER or at APCER = 5 %% / 1 %% (default: the run's threshold)",
    )
    predict.add_argument(
        "--no-thresholds",
        action="store_true",
        help="anti-spoofing: probabilities only, no decision (nothing read from the "
        "validation split)",
    )
    _select(predict)
    predict.set_defaults(func=cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if args.command == "predict":
            args.modality_files = unknown  # --<modality> FILE pairs, named by the checkpoint
        elif unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        return args.func(args)
    except USER_ERRORS as err:
        print(f"mmanet: error: {err}", file=sys.stderr)
        return 2
    except (TrainingError, ExportError) as err:
        print(f"mmanet: error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(f"mmanet: {err}", file=sys.stderr)
        return 128 + err.signum
    except OSError as err:  # e.g. a full disk: the previous checkpoint stays intact
        print(f"mmanet: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mmanet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Write a tiny synthetic dataset in CASIA-SURF's or CeFA's layout: make_fixtures.py NAME OUT."""

from __future__ import annotations

import argparse

from mmanet.data.fixtures import write_casia_surf, write_cefa

WRITERS = {"casia_surf": write_casia_surf, "cefa": write_cefa}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=sorted(WRITERS))
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--difficulty",
        type=float,
        default=0.0,
        help="0 (the tests' easy fixture) to 1: attacks blended towards bona fide faces per "
        "modality, more sensor noise",
    )
    parser.add_argument("--size", type=int, help="image side in pixels (default: the writer's)")
    parser.add_argument(
        "--count",
        type=int,
        help="samples per split (casia_surf) or subjects per race and split (cefa)",
    )
    args = parser.parse_args(argv)
    options: dict = {"seed": args.seed, "difficulty": args.difficulty}
    if args.size is not None:
        options["size"] = args.size
    if args.count is not None:
        key = "n_per_split" if args.dataset == "casia_surf" else "subjects_per_split"
        options[key] = args.count
    root = WRITERS[args.dataset](args.out_dir, **options)
    print(f"wrote a tiny {args.dataset} dataset to {root}")


if __name__ == "__main__":
    main()

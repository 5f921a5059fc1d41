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
    args = parser.parse_args(argv)
    root = WRITERS[args.dataset](args.out_dir, seed=args.seed)
    print(f"wrote a tiny {args.dataset} dataset to {root}")


if __name__ == "__main__":
    main()

"""Render the tabletop RGB-D dataset: ``python scripts/render_rgbd.py OUT [--seed N]``."""

import argparse

from mmanet.data.render_rgbd import render_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", help="dataset folder to (re)create")
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    root = render_dataset(
        args.out, args.n_train, args.n_test, tuple(args.size), args.seed, workers=args.workers
    )
    print(root)


if __name__ == "__main__":
    main()

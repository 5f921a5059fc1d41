"""End-to-end CLI run on a device: NYUv2 fixture, teacher -> MMANet -> evaluate.

Part of ``benchmarks/gpu_check.sh``: the real ``mmanet train`` / ``mmanet evaluate`` path
(data loading, training loop, MAR mining, all-combination evaluation, checkpoints) with
``precision=bf16`` and ``channels_last`` on the given device, on a small fixture in
NYUv2's prepared layout with the shipped ``configs/nyuv2`` shrunk by overrides::

    python benchmarks/gpu_e2e.py --device cuda
    torchrun --nproc_per_node=1 benchmarks/gpu_e2e.py --device cuda --workdir W --name ddp

Under torchrun every process must see the same ``--workdir``; write its fixture first with
a single-process run on that folder (the fixture is written only when missing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from mmanet.cli import main as cli
from mmanet.data.seg_fixtures import write_nyuv2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")
    parser.add_argument("--name", default="run", help="sub-folder of the runs in --workdir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        workdir = args.workdir or Path(name)
        root = workdir / "nyuv2"
        if not root.is_dir():
            write_nyuv2(root, n_train=16, n_test=4, size=(48, 64))
        tmp = workdir / args.name
        overrides = [
            f"data.root={root}",
            "data.nyuv2.size=[48,64]",
            "data.batch_size=4",
            "data.eval_batch_size=4",
            "data.num_workers=0",
            f"device={args.device}",
            f"precision={args.precision}",
            "channels_last=true",
            "progress=false",
            "tensorboard=false",
            "model.esanet.encoder=resnet18",
            "model.esanet.width=16",
            "model.esanet.decoder_channels=[32,16,16]",
            "optim.epochs=2",
            "method.mar.warmup_epochs=1",
        ]
        teacher, student = tmp / "teacher", tmp / "mmanet"
        train = ["train", "--config"]
        if cli([*train, "configs/nyuv2/teacher.yaml", f"out={teacher}", *overrides]):
            raise SystemExit("teacher training failed")
        student_args = [f"out={student}", f"method.teacher={teacher}", *overrides]
        if cli([*train, "configs/nyuv2/mmanet.yaml", *student_args]):
            raise SystemExit("MMANet training failed")
        if cli(["evaluate", "--run", str(student)]):
            raise SystemExit("evaluation failed")
        report = json.loads((student / "results_test.json").read_text())
        mious = {k: round(v["miou"], 2) for k, v in report["combinations"].items()}
        print(f"END-TO-END OK on {args.device} ({args.precision}, channels-last): mIoU {mious}")


if __name__ == "__main__":
    main()

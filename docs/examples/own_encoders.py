"""Your own Conv1d encoders on a manifest of .npy sensor windows: a teacher and MMANet,
every modality combination evaluated, the deployment network exported to ONNX.

Usage: python own_encoders.py windows.csv   (columns accel, gyro, label; see the guide)
"""

import sys

from torch import nn

from mmanet.config import build_config
from mmanet.engine import Trainer
from mmanet.export import export_onnx
from mmanet.models import from_encoders
from mmanet.report import metrics_table


class Conv1dEncoder(nn.Module):
    """(b, channels, time) window -> (b, 32) features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv1d(channels, 16, 5, padding=2), nn.ReLU(),
            nn.Conv1d(16, 32, 5, padding=2), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x):
        return self.layers(x)


def config(method: str, out: str, **method_keys):
    return build_config(overrides={
        "data": {"name": "manifest", "manifest": {"file": sys.argv[1]}, "batch_size": "auto"},
        "out": out, "optim": {"epochs": 12, "warmup_epochs": 2, "milestones": [9], "lr": 0.05},
        "method": {"name": method, "alpha": 3.0, "mar": {"warmup_epochs": 3}, **method_keys},
    })  # fmt: skip


network = from_encoders(lambda: {"accel": Conv1dEncoder(3), "gyro": Conv1dEncoder(3)})
Trainer(config("teacher", "runs/teacher"), model=network).fit()
report = Trainer(config("mmanet", "runs/mmanet", teacher="runs/teacher"), model=network).fit()
print(metrics_table(report, report["metrics"]))
export_onnx("runs/mmanet", "runs/mmanet/model.onnx", builder=network)

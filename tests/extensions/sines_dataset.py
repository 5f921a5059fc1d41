"""A dataset of one's own: the frequency class of a noisy sine, seen as a waveform and as
a spectrum, generated from the split seed."""

import math

import torch
from torch.utils.data import Dataset

from mmanet.config import DataConfig
from mmanet.data import DataBundle, register_dataset


class Sines(Dataset):
    """One split: samples ``({"wave": (32,), "spectrum": (17,)}, class)``."""

    def __init__(self, views: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        self.views, self.labels = views, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], int]:
        return {name: view[index] for name, view in self.views.items()}, int(self.labels[index])


@register_dataset("sines")
def build_sines(cfg: DataConfig) -> DataBundle:
    generator = torch.Generator().manual_seed(cfg.split_seed)
    labels = torch.arange(240) % 3  # frequency classes 1, 2, 3 Hz
    time = torch.linspace(0, 1, 32)
    wave = torch.sin(2 * math.pi * (labels[:, None] + 1) * time)
    views = {
        "wave": wave + 0.8 * torch.randn(wave.shape, generator=generator),
        "spectrum": torch.fft.rfft(wave).abs() + 2.0 * torch.randn(240, 17, generator=generator),
    }
    rows = {"train": slice(0, 160), "val": slice(160, 200), "test": slice(200, 240)}
    splits = {
        split: Sines({name: view[part] for name, view in views.items()}, labels[part])
        for split, part in rows.items()
    }
    return DataBundle(
        **splits,
        modalities=list(views),
        input_shapes={name: tuple(view.shape[1:]) for name, view in views.items()},
        class_names=["1 Hz", "2 Hz", "3 Hz"],
    )

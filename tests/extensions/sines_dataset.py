"""A dataset of one's own: the frequency class of a noisy sine, seen as a waveform and as
a spectrum, with its own settings (``data.sines.samples``, ``data.sines.seed``, ...)."""

import math
from dataclasses import dataclass

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


@dataclass
class SinesSettings:
    """``data.sines``: how many samples, their noise, and the generator's seed."""

    samples: int = 240  # two thirds train, one sixth val, one sixth test
    wave_noise: float = 0.8
    spectrum_noise: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 12:
            raise ValueError(f"data.sines.samples must be >= 12, got {self.samples}")


@register_dataset("sines", settings=SinesSettings)
def build_sines(cfg: DataConfig) -> DataBundle:
    own = cfg.sines
    n = own.samples
    generator = torch.Generator().manual_seed(own.seed)
    labels = torch.arange(n) % 3  # frequency classes 1, 2, 3 Hz
    time = torch.linspace(0, 1, 32)
    wave = torch.sin(2 * math.pi * (labels[:, None] + 1) * time)
    views = {
        "wave": wave + own.wave_noise * torch.randn(wave.shape, generator=generator),
        "spectrum": torch.fft.rfft(wave).abs()
        + own.spectrum_noise * torch.randn(n, 17, generator=generator),
    }
    train, val = n * 2 // 3, n * 5 // 6
    rows = {"train": slice(0, train), "val": slice(train, val), "test": slice(val, n)}
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

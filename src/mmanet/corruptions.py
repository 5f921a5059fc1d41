"""Corruptions of one modality's inputs, at severities 1..5, for evaluation under degraded
inputs (``mmanet evaluate --corrupt``, :mod:`mmanet.corruption_eval`).

A corruption is a registered function ``corruption(x, severity, generator, domain) ->
Tensor``: ``x`` is one modality's batch ``(b, ...)`` as the network reads it, ``severity``
an int 0..5 (0: the clean tensor itself, unchanged), ``generator`` the CPU
``torch.Generator`` every random draw comes from, and ``domain`` the :class:`Domain` of the
modality (its pixel range, its channels' standard deviation, its missing value). It returns
a tensor of ``x``'s shape, dtype and device. Register your own in a config's ``imports``
module::

    from mmanet.corruptions import register_corruption

    @register_corruption("dropout", parameters=(0.1, 0.2, 0.3, 0.4, 0.5), source="ours")
    def dropout(x, severity, generator, domain):
        ...

Two families:

- **image corruptions** (``image=True``): ImageNet-C's (Hendrycks & Dietterich, ICLR 2019),
  with their published parameters for ImageNet (224 × 224; applied in pixels whatever the
  image size), implemented here in torch. They run on the ``[0, 1]`` image, which
  :func:`apply_corruption` gets from the tensor with the modality's declared per-channel
  affine (``DataBundle.pixel_ranges``: ``x01 = x * scale + offset``), clips to ``[0, 1]``
  and maps back. A modality without a declared range cannot take them (a one-line
  ConfigError). The result is not quantised to 8 bits (ImageNet-C saves its images as
  8-bit files; only ``jpeg_compression`` quantises here).
- **signal corruptions**: for any modality (vectors, depth maps, time series), in the
  tensor domain. ``noise`` is scaled by each channel's standard deviation measured on the
  clean split (``Domain.channel_std``; dim 1 of the batch: a vector's features, a map's
  channels); ``holes`` and ``stuck`` act on *positions*: a vector's features, or a map's
  pixels (every channel of a pixel together). ``blur`` is for maps only.

Randomness: every draw comes from ``generator``; :func:`stream_seed` derives its seed from
(seed, corruption, modality, severity, batch index), so a batch's corruption depends on the
batches' order and size (evaluation never shuffles).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmanet.errors import ConfigError
from mmanet.registry import Interface, Registry

SEVERITIES = (1, 2, 3, 4, 5)
ALL = "all"  # the spec of every registered corruption that applies to the data

Corruption = Callable[[torch.Tensor, int, torch.Generator, "Domain"], torch.Tensor]

CORRUPTIONS: Registry = Registry(
    "corruption",
    "--corrupt",
    "mmanet.corruptions",
    Interface(
        "corruption(x, severity, generator, domain) -> x corrupted (severity 0: x itself)",
        ("x", "severity", "generator", "domain"),
        declarations={
            "image": bool,  # works on the [0, 1] image (needs the modality's pixel range)
            "maps": bool,  # needs (b, c, h, w) maps
            "parameters": tuple,  # the parameter at severities 1..5, for the docs
            "source": str,  # where the parameters come from
        },
    ),
)


@dataclass(frozen=True)
class Domain:
    """What a corruption knows of the modality it corrupts.

    Attributes:
        modality: its name.
        pixel_range: ``((scale, ...), (offset, ...))`` per channel with ``x01 = x * scale +
            offset`` (None: not an image).
        channel_std: (c,) each channel's standard deviation on the clean split, c being
            dim 1 of a batch (None: 1 for every channel).
        missing_value: what an absent value reads as (0: the datasets' missing modality,
            a standardised feature's mean, depth's invalid pixel).
    """

    modality: str
    pixel_range: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    channel_std: torch.Tensor | None = None
    missing_value: float = 0.0

    def _affine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pixel_range is None:
            raise ValueError(f"modality {self.modality!r} declares no pixel range")
        scale, offset = (
            torch.tensor(v, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
            for v in self.pixel_range
        )
        if x.ndim != 4 or scale.shape[1] not in (1, x.shape[1]):
            raise ConfigError(
                f"modality {self.modality!r}: its pixel range has {scale.shape[1]} channel(s), "
                f"its batch is {tuple(x.shape)} (need (b, c, h, w) images)"
            )
        return scale, offset

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as [0, 1] images: ``x * scale + offset`` per channel (float32)."""
        scale, offset = self._affine(x)
        return x.float() * scale + offset

    def from_unit(self, x01: torch.Tensor) -> torch.Tensor:
        """Back to the network's domain: ``(x01 - offset) / scale``."""
        scale, offset = self._affine(x01)
        return (x01 - offset) / scale

    def std(self, x: torch.Tensor) -> torch.Tensor:
        """Each channel's standard deviation, shaped to broadcast over ``x`` (1 without)."""
        if self.channel_std is None or x.ndim < 2:
            return torch.ones((), device=x.device)
        std = self.channel_std.to(device=x.device, dtype=torch.float32)
        return std.view(1, -1, *[1] * (x.ndim - 2))


def register_corruption(
    name: str,
    corruption: Corruption | None = None,
    *,
    image: bool = False,
    maps: bool = False,
    parameters: Sequence[object] = (),
    source: str = "",
) -> Callable[[Corruption], Corruption] | Corruption:
    """``@register_corruption("name", image=..., maps=..., parameters=(...5...), source=...)``
    on a function ``(x, severity, generator, domain) -> Tensor``."""
    declared = {"image": image, "maps": maps, "parameters": tuple(parameters), "source": source}
    if corruption is None:
        return CORRUPTIONS.register(name, **declared)
    return CORRUPTIONS.register(name, corruption, **declared)


def is_image(name: str) -> bool:
    return bool(CORRUPTIONS.declared(name, "image"))


def needs_maps(name: str) -> bool:
    return bool(CORRUPTIONS.declared(name, "maps"))


def applies(name: str, domain: Domain, ndim: int) -> bool:
    """Whether corruption ``name`` can corrupt a modality of ``domain`` whose batches have
    ``ndim`` dimensions."""
    if is_image(name):
        return domain.pixel_range is not None and ndim == 4
    return ndim == 4 if needs_maps(name) else True


def not_applicable(name: str, domain: Domain, ndim: int) -> str:
    """Why corruption ``name`` cannot corrupt ``domain``'s modality (one line)."""
    if is_image(name) and domain.pixel_range is None:
        return (
            f"{name!r} is an image corruption and modality {domain.modality!r} declares no "
            "pixel range (DataBundle.pixel_ranges)"
        )
    return f"{name!r} needs (b, c, h, w) maps; modality {domain.modality!r} has {ndim}-d batches"


def stream_seed(seed: int, name: str, modality: str, severity: int, batch: int) -> int:
    """The seed of the generator that corrupts one batch of one modality."""
    return zlib.crc32(f"{seed}/{name}/{modality}/{severity}/{batch}".encode())


def apply_corruption(
    name: str, x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """``x`` under corruption ``name`` at ``severity`` (0: ``x`` itself). An image
    corruption runs on the [0, 1] image of the modality's pixel range, clipped to [0, 1],
    and is mapped back."""
    corruption = CORRUPTIONS.get(name)
    _check_severity(severity)
    if severity == 0:
        return x
    if not applies(name, domain, x.ndim):
        raise ConfigError(f"--corrupt {name}: {not_applicable(name, domain, x.ndim)}")
    if is_image(name):
        image = corruption(domain.to_unit(x), severity, generator, domain).clamp(0.0, 1.0)
        return domain.from_unit(image).to(x.dtype)
    return corruption(x, severity, generator, domain).to(x.dtype)


def _check_severity(severity: int) -> None:
    if not isinstance(severity, int) or isinstance(severity, bool) or not 0 <= severity <= 5:
        raise ValueError(f"a corruption's severity is an int 0..5, got {severity!r}")


def _level(parameters: Sequence[object], severity: int) -> object:
    _check_severity(severity)
    return parameters[severity - 1]


def _normal(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator).to(like.device)


def _uniform(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator).to(like.device)


# -- image corruptions: ImageNet-C (Hendrycks & Dietterich, ICLR 2019), on [0, 1] images ----

IMAGENET_C = "ImageNet-C (Hendrycks & Dietterich, ICLR 2019), ImageNet parameters"

GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # σ
SHOT_NOISE = (60.0, 25.0, 12.0, 5.0, 3.0)  # photons per unit intensity
IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)  # salt-and-pepper fraction
MULTIPLICATIVE_NOISE = (0.15, 0.2, 0.35, 0.45, 0.6)  # speckle_noise: σ of x · N(0, σ²)
GAUSSIAN_BLUR = (1.0, 2.0, 3.0, 4.0, 6.0)  # σ in pixels
DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # disk radius, alias σ
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor about each channel's mean
SATURATE = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))  # HSV s * a + b
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # side factor of the box-downsampled image
JPEG_QUALITY = (25, 18, 15, 10, 7)  # Pillow JPEG quality


@register_corruption("gaussian_noise", image=True, parameters=GAUSSIAN_NOISE, source=IMAGENET_C)
def gaussian_noise(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """x + N(0, σ²) per value."""
    if severity == 0:
        return x
    sigma = float(_level(GAUSSIAN_NOISE, severity))  # type: ignore[arg-type]
    return (x + sigma * _normal(x.shape, generator, x)).clamp(0, 1)


@register_corruption("shot_noise", image=True, parameters=SHOT_NOISE, source=IMAGENET_C)
def shot_noise(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """Poisson(x · λ) / λ per value."""
    if severity == 0:
        return x
    rate = float(_level(SHOT_NOISE, severity))  # type: ignore[arg-type]
    counts = torch.poisson(x.detach().float().cpu().clamp(0, 1) * rate, generator=generator)
    return (counts.to(x.device) / rate).clamp(0, 1)


@register_corruption("impulse_noise", image=True, parameters=IMPULSE_NOISE, source=IMAGENET_C)
def impulse_noise(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """Salt and pepper: each value with probability ``amount`` set to 1 or 0 (even odds),
    as scikit-image's ``random_noise(mode="s&p")`` that ImageNet-C calls."""
    if severity == 0:
        return x
    amount = float(_level(IMPULSE_NOISE, severity))  # type: ignore[arg-type]
    flipped = _uniform(x.shape, generator, x) <= amount
    salted = _uniform(x.shape, generator, x) <= 0.5
    out = torch.where(flipped & salted, torch.ones_like(x), x)
    return torch.where(flipped & ~salted, torch.zeros_like(x), out)


@register_corruption(
    "speckle_noise", image=True, parameters=MULTIPLICATIVE_NOISE, source=IMAGENET_C
)
def speckle_noise(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """x + x · N(0, σ²) per value."""
    if severity == 0:
        return x
    sigma = float(_level(MULTIPLICATIVE_NOISE, severity))  # type: ignore[arg-type]
    return (x + x * sigma * _normal(x.shape, generator, x)).clamp(0, 1)


def gaussian_kernel(sigma: float, radius: int | None = None) -> torch.Tensor:
    """The normalised 1-D Gaussian of ``sigma`` over ±``radius`` (default ``int(4σ + 0.5)``,
    scipy's truncation that scikit-image's ``gaussian`` uses)."""
    radius = int(4.0 * sigma + 0.5) if radius is None else radius
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).float()


def _pad(x: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """``x`` (b, c, h, w) padded by ``pad`` on each side; reflection (without repeating the
    edge) falls back to repeating the edge on an image too small to reflect."""
    if mode == "reflect" and pad >= min(x.shape[-2:]):
        mode = "replicate"
    return F.pad(x, (pad, pad, pad, pad), mode=mode)


def separable_blur(x: torch.Tensor, kernel: torch.Tensor, mode: str = "replicate") -> torch.Tensor:
    """``x`` (b, c, h, w) convolved with ``kernel`` (odd length) along rows and columns."""
    b, c, h, w = x.shape
    pad = len(kernel) // 2
    k = kernel.to(device=x.device, dtype=torch.float32)
    flat = _pad(x.float().reshape(b * c, 1, h, w), pad, mode)
    flat = F.conv2d(flat, k.view(1, 1, 1, -1))
    flat = F.conv2d(flat, k.view(1, 1, -1, 1))
    return flat.reshape(b, c, h, w)


@register_corruption("gaussian_blur", image=True, parameters=GAUSSIAN_BLUR, source=IMAGENET_C)
def gaussian_blur(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """A Gaussian of σ pixels, edges repeated (scikit-image's ``gaussian``, mode nearest)."""
    if severity == 0:
        return x
    sigma = float(_level(GAUSSIAN_BLUR, severity))  # type: ignore[arg-type]
    return separable_blur(x, gaussian_kernel(sigma)).clamp(0, 1)


def disk_kernel(radius: int, alias_blur: float) -> torch.Tensor:
    """ImageNet-C's defocus kernel: the disk x² + y² ≤ r² on a grid of ±max(8, r),
    normalised, then smoothed by a 3 × 3 Gaussian of σ ``alias_blur`` (5 × 5 for r > 8;
    OpenCV's ``GaussianBlur``, borders reflected)."""
    half = 8 if radius <= 8 else radius
    size = 3 if radius <= 8 else 5
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).double()
    disk = disk / disk.sum()
    smooth = gaussian_kernel(alias_blur, size // 2).double()
    padded = F.pad(disk[None, None], (size // 2,) * 4, mode="reflect")
    smoothed = F.conv2d(F.conv2d(padded, smooth.view(1, 1, 1, -1)), smooth.view(1, 1, -1, 1))
    return smoothed[0, 0].float()


@register_corruption("defocus_blur", image=True, parameters=DEFOCUS_BLUR, source=IMAGENET_C)
def defocus_blur(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """Each channel filtered with :func:`disk_kernel` (OpenCV's ``filter2D``: borders
    reflected without repeating the edge)."""
    if severity == 0:
        return x
    radius, alias = _level(DEFOCUS_BLUR, severity)  # type: ignore[misc]
    kernel = disk_kernel(int(radius), float(alias)).to(x.device)
    b, c, h, w = x.shape
    pad = kernel.shape[0] // 2
    flat = _pad(x.float().reshape(b * c, 1, h, w), pad, "reflect")
    return F.conv2d(flat, kernel[None, None]).reshape(b, c, h, w).clamp(0, 1)


def _value(x: torch.Tensor) -> torch.Tensor:
    """HSV value: the largest channel, (b, 1, h, w)."""
    return x.amax(dim=1, keepdim=True)


@register_corruption("brightness", image=True, parameters=BRIGHTNESS, source=IMAGENET_C)
def brightness(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """HSV value v → min(v + c, 1), hue and saturation kept: every channel scaled by
    v'/v (a black pixel, v = 0, becomes the grey v')."""
    if severity == 0:
        return x
    shift = float(_level(BRIGHTNESS, severity))  # type: ignore[arg-type]
    v = _value(x)
    lifted = (v + shift).clamp(0, 1)
    scaled = x * (lifted / v.clamp_min(torch.finfo(x.dtype).tiny))
    return torch.where(v > 0, scaled, lifted.expand_as(x)).clamp(0, 1)


@register_corruption("contrast", image=True, parameters=CONTRAST, source=IMAGENET_C)
def contrast(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """(x − μ) · c + μ, μ each image's per-channel mean."""
    if severity == 0:
        return x
    factor = float(_level(CONTRAST, severity))  # type: ignore[arg-type]
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


@register_corruption("saturate", image=True, parameters=SATURATE, source=IMAGENET_C)
def saturate(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """HSV saturation s → clip(s · a + b), hue and value kept (3-channel RGB). A grey pixel
    has hue 0 (red), as in scikit-image's conversion that ImageNet-C uses."""
    if severity == 0:
        return x
    if x.shape[1] != 3:
        raise ConfigError(f"--corrupt saturate: modality {domain.modality!r} is not RGB")
    factor, shift = _level(SATURATE, severity)  # type: ignore[misc]
    v = _value(x)
    low = x.amin(dim=1, keepdim=True)
    tiny = torch.finfo(x.dtype).tiny
    s = torch.where(v > 0, (v - low) / v.clamp_min(tiny), torch.zeros_like(v))
    s_new = (s * float(factor) + float(shift)).clamp(0, 1)
    coloured = v - (s_new / s.clamp_min(tiny)) * (v - x)  # each channel's distance from v
    grey = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], dim=1)  # hue 0
    return torch.where(v - low > 0, coloured, grey).clamp(0, 1)


@register_corruption("pixelate", image=True, parameters=PIXELATE, source=IMAGENET_C)
def pixelate(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """Box-downsampled to ``int(side · c)`` and back up (each small pixel repeated).
    Pillow's BOX filter weighs fractional pixels; the downsampling here is torch's area
    interpolation (adaptive average pooling)."""
    if severity == 0:
        return x
    factor = float(_level(PIXELATE, severity))  # type: ignore[arg-type]
    h, w = x.shape[-2:]
    small = F.interpolate(
        x.float(), size=(max(1, int(h * factor)), max(1, int(w * factor))), mode="area"
    )
    return F.interpolate(small, size=(h, w), mode="nearest")


@register_corruption("jpeg_compression", image=True, parameters=JPEG_QUALITY, source=IMAGENET_C)
def jpeg_compression(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """Each image saved as an 8-bit JPEG of the quality with Pillow and read back
    (3 channels as RGB, any other count one grey image per channel)."""
    import numpy as np
    from PIL import Image

    if severity == 0:
        return x
    quality = int(_level(JPEG_QUALITY, severity))  # type: ignore[call-overload]
    pixels = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = np.empty_like(pixels)
    for i, image in enumerate(pixels):
        planes = [image.transpose(1, 2, 0)] if image.shape[0] == 3 else list(image)
        decoded = []
        for plane in planes:
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(plane)).save(buffer, "JPEG", quality=quality)
            buffer.seek(0)
            with Image.open(buffer) as img:
                decoded.append(np.asarray(img))
        out[i] = decoded[0].transpose(2, 0, 1) if image.shape[0] == 3 else np.stack(decoded)
    return torch.from_numpy(out).to(x.device).float() / 255.0


# -- signal corruptions: any modality, in the tensor domain (parameters: ours) -------------

OURS = "ours (mmanet)"
NOISE = (0.1, 0.25, 0.5, 0.75, 1.0)  # σ in units of each channel's clean std
HOLES = (0.05, 0.1, 0.2, 0.35, 0.5)  # fraction of positions set to the missing value
STUCK = (0.05, 0.1, 0.2, 0.35, 0.5)  # fraction of positions frozen across the batch
BLUR = GAUSSIAN_BLUR  # σ in pixels: ImageNet-C's gaussian_blur, on the tensor


def positions(x: torch.Tensor) -> torch.Tensor:
    """``x`` viewed as (b, c, p): a vector's features are its p positions (c = 1); a map's
    (or a series') positions are its pixels (steps), each with its c channels."""
    b = x.shape[0]
    if x.ndim <= 2:
        return x.reshape(b, 1, -1)
    return x.reshape(b, x.shape[1], -1)


def count(fraction: float, total: int) -> int:
    """How many of ``total`` positions a fraction takes: round(fraction · total)
    (Python's rounding: halves to even)."""
    return round(fraction * total)


@register_corruption("noise", parameters=NOISE, source=OURS)
def noise(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """x + N(0, (σ · std_c)²): additive Gaussian noise, std_c the channel's clean std."""
    if severity == 0:
        return x
    sigma = float(_level(NOISE, severity))  # type: ignore[arg-type]
    return x + sigma * domain.std(x) * _normal(x.shape, generator, x)


@register_corruption("holes", parameters=HOLES, source=OURS)
def holes(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """In each sample, round(f · p) positions drawn at random (every channel of a pixel)
    set to the missing value."""
    if severity == 0:
        return x
    fraction = float(_level(HOLES, severity))  # type: ignore[arg-type]
    view = positions(x)
    b, _, p = view.shape
    chosen = _uniform((b, p), generator, x).argsort(dim=1)[:, : count(fraction, p)]
    hole = torch.zeros(b, p, dtype=torch.bool, device=x.device)
    hole.scatter_(1, chosen, True)
    out = view.masked_fill(hole[:, None, :], domain.missing_value)
    return out.reshape(x.shape)


@register_corruption("stuck", parameters=STUCK, source=OURS)
def stuck(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """round(f · p) positions drawn at random, the same for every sample of the batch,
    frozen at the values one sample of the batch (drawn at random) has there: a stuck
    sensor element repeats its reading."""
    if severity == 0:
        return x
    fraction = float(_level(STUCK, severity))  # type: ignore[arg-type]
    view = positions(x)
    b, _, p = view.shape
    chosen = torch.randperm(p, generator=generator)[: count(fraction, p)].to(x.device)
    source = int(torch.randint(b, (1,), generator=generator))
    out = view.clone()
    out[:, :, chosen] = view[source : source + 1, :, chosen]
    return out.reshape(x.shape)


@register_corruption("blur", maps=True, parameters=BLUR, source="ImageNet-C's gaussian_blur σ")
def blur(
    x: torch.Tensor, severity: int, generator: torch.Generator, domain: Domain
) -> torch.Tensor:
    """A Gaussian of σ pixels over a map's every channel, edges repeated."""
    if severity == 0:
        return x
    sigma = float(_level(BLUR, severity))  # type: ignore[arg-type]
    return separable_blur(x, gaussian_kernel(sigma))


# -- specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorruptionSpec:
    """One ``--corrupt`` spec, ``name[:severity][@modality]``."""

    name: str  # a registered corruption, or "all"
    severities: tuple[int, ...] = SEVERITIES
    modality: str | None = None  # None: every modality it applies to, together
    text: str = ""  # as written


def parse_spec(text: str) -> CorruptionSpec:
    """``"gaussian_noise:3@rgb"`` -> CorruptionSpec("gaussian_noise", (3,), "rgb"); the
    severity (0..5) defaults to every one of 1..5, the modality to all of them. A bad spec
    is a one-line ConfigError naming it and the known corruptions."""
    spec = text.strip()
    rest, at, modality = spec.partition("@")
    name, colon, severity = rest.partition(":")
    name, modality = name.strip(), modality.strip()
    known = f"known: {ALL}, {', '.join(CORRUPTIONS.names())}"
    if not name or (at and not modality) or "@" in modality or ":" in modality:
        raise ConfigError(f"--corrupt {text!r}: not name[:severity][@modality] ({known})")
    if name != ALL and name not in CORRUPTIONS:
        raise ConfigError(f"--corrupt {text!r}: unknown corruption {name!r} ({known})")
    severities = SEVERITIES
    if colon:
        if not severity.strip().isdigit() or not 0 <= int(severity) <= 5:
            raise ConfigError(f"--corrupt {text!r}: severity {severity!r} is not 0..5 ({known})")
        severities = (int(severity),)
    return CorruptionSpec(name, severities, modality or None, spec)


@dataclass(frozen=True)
class CorruptionTarget:
    """One corruption on given modalities, at the severities to evaluate."""

    name: str
    modalities: tuple[str, ...]
    severities: tuple[int, ...]
    modality: str  # what a report calls the target: one modality, or "all"

    @property
    def label(self) -> str:
        """``"name@modality"``, or ``"name"`` when it corrupts every modality it applies to."""
        return self.name if self.modality == ALL else f"{self.name}@{self.modality}"


def resolve_specs(
    specs: Sequence[str | CorruptionSpec], domains: dict[str, Domain], ndims: dict[str, int]
) -> list[CorruptionTarget]:
    """The targets of ``specs`` on the data's modalities (``domains``, ``ndims``: each
    modality's domain and batch dimensions), in the order given (``all``: every registered
    corruption that applies to at least one modality); specs of one corruption and target
    make one target with all their severities. A modality the data lacks, or one the
    corruption does not apply to, is a one-line ConfigError naming the spec."""
    targets: list[CorruptionTarget] = []
    for item in specs:
        spec = parse_spec(item) if isinstance(item, str) else item
        names = CORRUPTIONS.names() if spec.name == ALL else [spec.name]
        for name in names:
            if spec.modality is not None:
                if spec.modality not in domains:
                    raise ConfigError(
                        f"--corrupt {spec.text!r}: unknown modality {spec.modality!r} "
                        f"(this data has {', '.join(domains)})"
                    )
                domain = domains[spec.modality]
                if not applies(name, domain, ndims[spec.modality]):
                    if spec.name == ALL:
                        continue
                    why = not_applicable(name, domain, ndims[spec.modality])
                    raise ConfigError(f"--corrupt {spec.text!r}: {why}")
                modalities, label = (spec.modality,), spec.modality
            else:
                modalities = tuple(m for m, d in domains.items() if applies(name, d, ndims[m]))
                if not modalities:
                    if spec.name == ALL:
                        continue
                    whys = "; ".join(not_applicable(name, d, ndims[m]) for m, d in domains.items())
                    raise ConfigError(f"--corrupt {spec.text!r}: applies to no modality: {whys}")
                label = ALL
            same = [i for i, t in enumerate(targets) if (t.name, t.modality) == (name, label)]
            if same:  # one target per label: the severities of every spec of it
                known = targets[same[0]]
                severities = tuple(sorted({*known.severities, *spec.severities}))
                targets[same[0]] = CorruptionTarget(name, modalities, severities, label)
            else:
                targets.append(CorruptionTarget(name, modalities, spec.severities, label))
    return targets


def severity_table() -> list[tuple[str, str, tuple[object, ...], str]]:
    """``(name, family, its 5 parameters, source)`` of every registered corruption."""
    rows = []
    for name in CORRUPTIONS.names():
        family = "image" if is_image(name) else ("maps" if needs_maps(name) else "signal")
        parameters = CORRUPTIONS.declared(name, "parameters") or ()
        rows.append((name, family, tuple(parameters), str(CORRUPTIONS.declared(name, "source"))))
    return rows


__all__ = [
    "ALL",
    "CORRUPTIONS",
    "SEVERITIES",
    "CorruptionSpec",
    "CorruptionTarget",
    "Domain",
    "applies",
    "apply_corruption",
    "gaussian_kernel",
    "parse_spec",
    "register_corruption",
    "resolve_specs",
    "severity_table",
    "stream_seed",
]

"""Corrupted inputs in evaluation (``mmanet evaluate --corrupt``): every corruption against
its formula computed by hand, the pixel-range mapping, determinism, the spec parser, and a
tiny trained run whose severity-0 scores are exactly its clean ones."""

from __future__ import annotations

import colorsys
import json
import re
from pathlib import Path

import pytest
import torch

from mmanet.cli import main
from mmanet.corruption_eval import (
    BatchCorruption,
    ChannelStats,
    TrainingCorruption,
    _TargetPasses,
    corruption_table,
    corruption_targets,
    data_domains,
    error_of,
    evaluate_corruptions,
)
from mmanet.corruptions import (
    BRIGHTNESS,
    CONTRAST,
    CORRUPTIONS,
    HOLES,
    NOISE,
    SATURATE,
    SEVERITIES,
    STUCK,
    Domain,
    apply_corruption,
    disk_kernel,
    gaussian_kernel,
    parse_spec,
    register_corruption,
    resolve_specs,
    stream_seed,
)
from mmanet.errors import ConfigError
from mmanet.experiment import demo_config_path
from mmanet.testing import TINY

FACE_RANGE = ((128 / 255,) * 3, (127.5 / 255,) * 3)  # (x - 127.5) / 128 of 8-bit images


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def face_batch(b: int = 2, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    """8-bit images as the face datasets give them: (x - 127.5) / 128."""
    pixels = torch.randint(0, 256, (b, 3, h, w), generator=generator(seed)).float()
    return (pixels - 127.5) / 128


def batch_for(name: str) -> tuple[torch.Tensor, Domain]:
    """A batch the corruption applies to, with its domain."""
    if CORRUPTIONS.declared(name, "image"):
        return face_batch(), Domain("rgb", FACE_RANGE)
    if CORRUPTIONS.declared(name, "maps"):
        return torch.randn(2, 3, 8, 8, generator=generator()), Domain("depth")
    return torch.randn(4, 20, generator=generator()), Domain("fou")


# -- severity 0, the registry ---------------------------------------------------------------


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_every_corruption_at_severity_zero_is_the_clean_tensor(name):
    x, domain = batch_for(name)
    clean = x.clone()
    raw = CORRUPTIONS.get(name)
    unit = domain.to_unit(x) if domain.pixel_range else x
    assert torch.equal(raw(unit, 0, generator(), domain), unit)
    assert apply_corruption(name, x, 0, generator(), domain) is x
    assert torch.equal(x, clean)  # nothing changed in place either


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_every_corruption_keeps_shape_dtype_and_changes_the_input(name):
    x, domain = batch_for(name)
    for severity in SEVERITIES:
        out = apply_corruption(name, x, severity, generator(severity), domain)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert not torch.equal(out, x), (name, severity)
        if domain.pixel_range:  # back in the tensor domain, within the image's range
            image = domain.to_unit(out)
            assert image.min() >= -1e-5 and image.max() <= 1 + 1e-5


def test_every_corruption_documents_five_parameters_and_a_source():
    for name in CORRUPTIONS.names():
        assert len(CORRUPTIONS.declared(name, "parameters")) == 5, name
        assert CORRUPTIONS.declared(name, "source"), name


def test_a_users_corruption_registers_and_is_in_all():
    @register_corruption("negate", parameters=(1, 2, 3, 4, 5), source="a test")
    def negate(x, severity, generator, domain):
        return x if severity == 0 else -x

    try:
        targets = resolve_specs(["all"], {"fou": Domain("fou")}, {"fou": 2})
        assert "negate" in [t.name for t in targets]
        x = torch.ones(2, 3)
        assert torch.equal(apply_corruption("negate", x, 2, generator(), Domain("fou")), -x)
    finally:
        CORRUPTIONS.unregister("negate")


def test_a_corruption_with_the_wrong_signature_is_refused():
    with pytest.raises(TypeError, match="must take"):
        register_corruption("broken", lambda x: x)
    assert "broken" not in CORRUPTIONS


# -- image corruptions against their formulas -----------------------------------------------


def test_the_face_and_imagenet_pixel_ranges_round_trip():
    pixels = torch.arange(256, dtype=torch.float32).repeat(3, 1).view(1, 3, 16, 16)
    face = Domain("rgb", FACE_RANGE)
    x = (pixels - 127.5) / 128
    assert torch.allclose(face.to_unit(x), pixels / 255, atol=1e-6)
    assert torch.allclose(face.from_unit(face.to_unit(x)), x, atol=1e-6)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    rgbd = Domain("rgb", (std, mean))
    y = (pixels / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(rgbd.to_unit(y), pixels / 255, atol=1e-6)
    assert torch.allclose(rgbd.from_unit(rgbd.to_unit(y)), y, atol=1e-5)
    for name in CORRUPTIONS.names():
        if CORRUPTIONS.declared(name, "image"):
            assert apply_corruption(name, y, 0, generator(), rgbd) is y


def test_the_datasets_declare_their_pixel_ranges(tmp_path):
    from mmanet.config import DataConfig
    from mmanet.data import build_data
    from mmanet.data.fixtures import write_casia_surf
    from mmanet.data.nyuv2 import load_nyuv2
    from mmanet.data.seg_fixtures import write_nyuv2

    face = build_data(
        DataConfig(name="casia_surf", root=str(write_casia_surf(tmp_path / "s", 2, size=16)))
    )
    assert set(face.pixel_ranges) == {"rgb", "depth", "ir"}
    inputs, _ = face.test[0]
    for name in ("rgb", "depth", "ir"):
        image = Domain(name, face.pixel_ranges[name]).to_unit(inputs[name][None])
        assert torch.allclose(image * 255, (image * 255).round(), atol=1e-4)  # 8-bit levels
        assert image.min() >= 0 and image.max() <= 1
    nyu = load_nyuv2(write_nyuv2(tmp_path / "n", 2, 1, size=(8, 8)), size=(8, 8))
    assert set(nyu.pixel_ranges) == {"rgb"}  # depth is no image: signal corruptions only
    image = Domain("rgb", nyu.pixel_ranges["rgb"]).to_unit(nyu.test[0][0]["rgb"][None])
    assert torch.allclose(image * 255, (image * 255).round(), atol=1e-4)  # 8-bit levels
    assert image.min() >= -1e-6 and image.max() <= 1 + 1e-6


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_and_saturate_are_the_hsv_formulas(severity):
    # a colour pixel, a grey one and a black one; colorsys is the HSV of the formulas
    x = torch.tensor([[[[0.2, 0.5, 0.0]], [[0.4, 0.5, 0.0]], [[0.6, 0.5, 0.0]]]])  # (1,3,1,3)
    out_b = CORRUPTIONS.get("brightness")(x, severity, generator(), Domain("rgb"))
    out_s = CORRUPTIONS.get("saturate")(x, severity, generator(), Domain("rgb"))
    for j in range(3):
        h, s, v = colorsys.rgb_to_hsv(*x[0, :, 0, j].tolist())
        bright = colorsys.hsv_to_rgb(h, s, min(v + BRIGHTNESS[severity - 1], 1.0))
        a, b = SATURATE[severity - 1]
        saturated = colorsys.hsv_to_rgb(h, min(max(s * a + b, 0.0), 1.0), v)
        assert out_b[0, :, 0, j].tolist() == pytest.approx(bright, abs=1e-6)
        assert out_s[0, :, 0, j].tolist() == pytest.approx(saturated, abs=1e-6)
    if severity == 1:  # by hand: v 0.6 -> 0.7 scales the pixel by 7/6; black -> grey 0.1
        assert out_b[0, :, 0, 0].tolist() == pytest.approx([0.7 / 3, 1.4 / 3, 0.7], abs=1e-6)
        assert out_b[0, :, 0, 2].tolist() == pytest.approx([0.1] * 3, abs=1e-6)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_scales_about_each_channels_mean(severity):
    x = torch.tensor([[[[0.0, 0.2], [0.4, 0.6]], [[1.0, 1.0], [1.0, 0.0]]]])  # (1, 2, 2, 2)
    c = CONTRAST[severity - 1]
    out = CORRUPTIONS.get("contrast")(x, severity, generator(), Domain("rgb"))
    first = [(v - 0.3) * c + 0.3 for v in (0.0, 0.2, 0.4, 0.6)]  # channel mean 0.3
    second = [(v - 0.75) * c + 0.75 for v in (1.0, 1.0, 1.0, 0.0)]  # channel mean 0.75
    assert out[0, 0].flatten().tolist() == pytest.approx(first, abs=1e-6)
    assert out[0, 1].flatten().tolist() == pytest.approx(second, abs=1e-6)


def test_the_imagenet_c_parameters_are_the_published_ones():
    published = {  # Hendrycks & Dietterich (ICLR 2019), make_imagenet_c.py
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
        "gaussian_blur": (1, 2, 3, 4, 6),
        "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (25, 18, 15, 10, 7),
    }
    for name, values in published.items():
        assert CORRUPTIONS.declared(name, "image") is True
        assert CORRUPTIONS.declared(name, "parameters") == values, name


def test_gaussian_noise_sigma_in_the_image_domain_through_the_range():
    face = Domain("rgb", FACE_RANGE)
    x = torch.zeros(8, 3, 64, 64)  # grey 127.5 / 255: clipping is > 4 σ away at severity 1, 2
    for severity, sigma in ((1, 0.08), (2, 0.12)):  # ImageNet-C's σ
        out = apply_corruption("gaussian_noise", x, severity, generator(severity), face)
        measured = (face.to_unit(out) - face.to_unit(x)).std().item()
        assert measured == pytest.approx(sigma, rel=0.02)
        # in the tensor domain the noise is σ / scale
        assert out.std().item() == pytest.approx(sigma * 255 / 128, rel=0.02)


def test_impulse_noise_sets_the_fraction_to_zero_or_one():
    x = torch.full((4, 3, 50, 50), 0.5)
    out = CORRUPTIONS.get("impulse_noise")(x, 3, generator(), Domain("rgb"))
    changed = out != 0.5
    assert set(out[changed].unique().tolist()) == {0.0, 1.0}
    assert changed.float().mean().item() == pytest.approx(0.09, abs=0.005)
    assert (out == 1).sum().item() == pytest.approx((out == 0).sum().item(), rel=0.1)


def test_pixelate_averages_blocks_and_repeats_them():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) / 16
    out = CORRUPTIONS.get("pixelate")(x, 2, generator(), Domain("rgb"))  # factor 0.5: 2 x 2
    blocks = torch.tensor([[2.5, 4.5], [10.5, 12.5]]) / 16  # each 2 x 2 block's mean
    assert torch.allclose(out[0, 0], blocks.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_blur_kernels():
    assert gaussian_kernel(2.0).sum().item() == pytest.approx(1.0)
    assert len(gaussian_kernel(2.0)) == 2 * 8 + 1  # radius int(4 σ + 0.5)
    assert disk_kernel(3, 0.1).shape == (17, 17) and disk_kernel(10, 0.5).shape == (21, 21)
    assert disk_kernel(3, 0.1).sum().item() == pytest.approx(1.0, abs=1e-3)
    flat = torch.full((1, 3, 12, 12), 0.3)
    for name in ("gaussian_blur", "blur"):
        out = CORRUPTIONS.get(name)(flat, 5, generator(), Domain("rgb"))
        assert torch.allclose(out, flat, atol=1e-5), name  # a flat image stays flat
    # ImageNet-C smooths the normalised disk with OpenCV's reflected borders: at radius 10
    # the disk touches the grid's edge and the kernel sums to a little over 1
    total = disk_kernel(10, 0.5).sum().item()
    assert 1.0 < total < 1.02
    out = CORRUPTIONS.get("defocus_blur")(flat, 5, generator(), Domain("rgb"))
    assert torch.allclose(out, flat * total, atol=1e-5)


def test_jpeg_gives_eight_bit_levels():
    x = torch.rand(2, 3, 16, 16, generator=generator())
    out = CORRUPTIONS.get("jpeg_compression")(x, 5, generator(), Domain("rgb"))
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)
    assert 0.001 < (out - x).abs().mean().item() < 0.3


# -- signal corruptions against their formulas ----------------------------------------------


@pytest.mark.parametrize("severity", SEVERITIES)
def test_noise_sigma_is_the_table_times_the_channels_std(severity):
    x = torch.zeros(100_000, 2)
    domain = Domain("fou", channel_std=torch.tensor([1.0, 3.0]))
    out = apply_corruption("noise", x, severity, generator(severity), domain)
    sigma = NOISE[severity - 1]
    assert out[:, 0].std().item() == pytest.approx(sigma, rel=0.02)
    assert out[:, 1].std().item() == pytest.approx(3 * sigma, rel=0.02)
    plain = apply_corruption("noise", x, severity, generator(severity), Domain("fou"))
    assert plain.std().item() == pytest.approx(sigma, rel=0.02)  # no std measured: 1


@pytest.mark.parametrize("severity", SEVERITIES)
def test_holes_zero_exactly_round_f_n_values_per_sample(severity):
    fraction = HOLES[severity - 1]
    x = torch.rand(6, 77, generator=generator()) + 1  # no zero of its own
    out = apply_corruption("holes", x, severity, generator(), Domain("fou"))
    assert ((out == 0).sum(dim=1) == round(fraction * 77)).all()
    assert torch.equal(out[out != 0], x[out != 0])
    maps = torch.rand(3, 2, 9, 10, generator=generator()) + 1
    out = apply_corruption("holes", maps, severity, generator(), Domain("depth"))
    holes = out == 0
    assert torch.equal(holes[:, 0], holes[:, 1])  # whole pixels, every channel
    assert (holes[:, 0].flatten(1).sum(dim=1) == round(fraction * 90)).all()


@pytest.mark.parametrize("severity", SEVERITIES)
def test_stuck_freezes_the_same_features_at_one_samples_values(severity):
    fraction = STUCK[severity - 1]
    x = torch.randn(8, 60, generator=generator())
    out = apply_corruption("stuck", x, severity, generator(), Domain("fou"))
    frozen = (out == out[0]).all(dim=0)  # the same value in every sample of the batch
    assert frozen.sum().item() == round(fraction * 60)
    assert any(torch.equal(out[:, frozen][0], x[i, frozen]) for i in range(8))
    assert torch.equal(out[:, ~frozen], x[:, ~frozen])
    maps = torch.randn(4, 2, 5, 6, generator=generator())
    out = apply_corruption("stuck", maps, severity, generator(), Domain("depth"))
    frozen = (out == out[:1]).all(dim=0).all(dim=0)  # (h, w): pixels stuck in every channel
    assert frozen.sum().item() == round(fraction * 30)


def test_corruptions_are_deterministic_per_seed_and_batch():
    targets = resolve_specs(["noise:3", "holes:2"], {"fou": Domain("fou")}, {"fou": 2})
    x = {"fou": torch.randn(16, 10, generator=generator())}
    for target in targets:
        severity = target.severities[0]
        first = BatchCorruption(target, severity, 0, {"fou": Domain("fou")})(x, 0)["fou"]
        again = BatchCorruption(target, severity, 0, {"fou": Domain("fou")})(x, 0)["fou"]
        other_seed = BatchCorruption(target, severity, 1, {"fou": Domain("fou")})(x, 0)["fou"]
        other_batch = BatchCorruption(target, severity, 0, {"fou": Domain("fou")})(x, 1)["fou"]
        assert torch.equal(first, again)
        assert not torch.equal(first, other_seed) and not torch.equal(first, other_batch)
    assert stream_seed(0, "noise", "fou", 3, 0) != stream_seed(0, "noise", "kar", 3, 0)


def test_channel_stats_are_the_population_std_per_channel():
    stats = ChannelStats()
    a, b = torch.randn(5, 3, 4, 4), torch.randn(7, 3, 4, 4)
    vec = torch.randn(12, 6)
    stats({"rgb": a, "fou": vec[:5]}, 0)
    stats({"rgb": b, "fou": vec[5:]}, 1)
    every = torch.cat([a, b]).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(stats.std()["rgb"], every.std(dim=1, unbiased=False), atol=1e-5)
    assert torch.allclose(stats.std()["fou"], vec.std(dim=0, unbiased=False), atol=1e-5)


# -- specs ----------------------------------------------------------------------------------


def test_good_specs():
    assert parse_spec("gaussian_noise").severities == (1, 2, 3, 4, 5)
    spec = parse_spec("noise:3@fou")
    assert (spec.name, spec.severities, spec.modality) == ("noise", (3,), "fou")
    assert parse_spec("holes:0").severities == (0,)
    assert parse_spec("all@depth").modality == "depth"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown corruption 'nope'"),
        ("noise:6", "severity '6' is not 0..5"),
        ("noise:x", "severity 'x' is not 0..5"),
        ("noise@", "not name[:severity][@modality]"),
        ("noise@fou@kar", "not name[:severity][@modality]"),
        ("", "not name[:severity][@modality]"),
    ],
)
def test_bad_specs_are_one_line_errors_listing_the_names(spec, message):
    with pytest.raises(ConfigError) as err:
        parse_spec(spec)
    text = str(err.value)
    assert "\n" not in text and f"--corrupt {spec!r}" in text and message in text
    assert "known: all, gaussian_noise" in text and "stuck" in text


def test_specs_resolve_against_the_modalities():
    domains = {"rgb": Domain("rgb", FACE_RANGE), "depth": Domain("depth"), "fou": Domain("fou")}
    ndims = {"rgb": 4, "depth": 4, "fou": 2}
    (target,) = resolve_specs(["gaussian_noise"], domains, ndims)
    assert target.modalities == ("rgb",) and target.label == "gaussian_noise"
    (target,) = resolve_specs(["blur"], domains, ndims)
    assert target.modalities == ("rgb", "depth")
    (target,) = resolve_specs(["holes:2@depth", "holes:4@depth"], domains, ndims)
    assert target.severities == (2, 4) and target.label == "holes@depth"
    names = [t.name for t in resolve_specs(["all@fou"], domains, ndims)]
    assert names == ["noise", "holes", "stuck"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "gaussian_noise@fou",
            "--corrupt 'gaussian_noise@fou': 'gaussian_noise' is an image corruption and "
            "modality 'fou' declares no pixel range",
        ),
        ("noise@rgb", "--corrupt 'noise@rgb': unknown modality 'rgb' (this data has fou, kar)"),
        ("blur@kar", "'blur' needs (b, c, h, w) maps; modality 'kar' has 2-d batches"),
        ("contrast", "--corrupt 'contrast': applies to no modality"),
    ],
)
def test_a_corruption_that_does_not_apply_is_a_one_line_error(spec, message):
    domains, ndims = {"fou": Domain("fou"), "kar": Domain("kar")}, {"fou": 2, "kar": 2}
    with pytest.raises(ConfigError) as err:
        resolve_specs([spec], domains, ndims)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_image_corruption_asked_directly_of_a_modality_without_range_is_one_line():
    with pytest.raises(ConfigError) as err:
        apply_corruption("contrast", torch.rand(1, 3, 4, 4), 2, generator(), Domain("depth"))
    assert "'contrast' is an image corruption and modality 'depth'" in str(err.value)
    assert "\n" not in str(err.value)


# -- the passes -----------------------------------------------------------------------------


class RecordingPasses:
    def __init__(self, tag):
        self.tag, self.calls = tag, []

    def counts(self, loader, masks, task):
        self.calls.append(("counts", loader))
        return self.tag

    def scores(self, loader, masks):
        self.calls.append(("scores", loader))
        return self.tag


def test_only_the_evaluated_split_is_corrupted_and_calibration_is_computed_once():
    corrupted, clean, cache = RecordingPasses("corrupted"), RecordingPasses("clean"), {}
    target, calibration = object(), object()
    for _ in range(3):  # three corruptions share the cache
        passes = _TargetPasses(corrupted, clean, target, cache)
        assert passes.scores(calibration, [(1, 1)]) == "clean"
        assert passes.scores(target, [(1, 1)]) == "corrupted"
        assert passes.counts(target, [(1, 1)], None) == "corrupted"
    assert clean.calls == [("scores", calibration)]
    assert len(corrupted.calls) == 6


def test_error_form():
    assert error_of(80.0, lower_is_better=False) == pytest.approx(20.0)
    assert error_of(12.5, lower_is_better=True) == 12.5


# -- a tiny trained run, through the function and the CLI -----------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("corrupt") / "run"
    overrides = [o for o in TINY if not o.startswith("data.modalities")]
    args = ["train", "--config", str(demo_config_path()), *overrides]
    assert main([*args, "data.modalities=[fou,kar]", "optim.epochs=2", f"out={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def loaded(run):
    from mmanet.config import build_config
    from mmanet.data import build_data
    from mmanet.engine import load_network
    from mmanet.tasks import build_task

    config = build_config(run / "config.yaml", [])
    data = build_data(config.data)
    model, _ = load_network(run, modalities=data.modalities, model=config.model)
    return model, data, build_task(data, config)


def test_severity_zero_is_exactly_the_clean_score_through_the_cli(run, capsys):
    args = ["evaluate", "--run", str(run), "--corrupt", "noise:0", "--corrupt", "holes:0@fou"]
    assert main([*args, "--corrupt", "stuck:2@kar", "--corrupt-seed", "3"]) == 0
    printed = capsys.readouterr().out
    found = sorted((run / "evaluations").glob("test-*.json"))
    report = json.loads(found[-1].read_text())
    section = report["corruptions"]
    table = {name: row["error"] for name, row in report["combinations"].items()}
    assert section["clean"] == table
    assert (section["metric"], section["error_form"], section["seed"]) == ("error", "value", 3)
    rows = {(r["label"], r["severity"]): r for r in section["results"]}
    assert set(rows) == {("noise", 0), ("holes@fou", 0), ("stuck@kar", 2)}
    for label in ("noise", "holes@fou"):
        assert rows[label, 0]["combinations"] == table  # exactly, not approximately
        assert section["summary"][label]["degradation"] == 0.0
    stuck = rows["stuck@kar", 2]
    assert stuck["combinations"]["fou"] == table["fou"]  # kar corrupted: fou alone is not
    assert stuck["average"] == pytest.approx(sum(stuck["combinations"].values()) / 3)
    summary = section["summary"]["stuck@kar"]
    assert summary["mean_error"] == stuck["average"]
    assert summary["degradation"] == pytest.approx(stuck["average"] - sum(table.values()) / 3)
    assert section["mean_degradation"] == pytest.approx(summary["degradation"] / 3)
    figure = found[-1].with_name(f"{found[-1].stem}-corruptions.png")
    assert figure.is_file() and figure.stat().st_size > 1000
    assert re.search(r"^stuck@kar +2 ", printed, re.M) and "stuck@kar: mean error" in printed


def test_no_figures_writes_none(run, tmp_path):
    for old in (run / "evaluations").glob("*-corruptions.png"):
        old.unlink()
    assert main(["evaluate", "--run", str(run), "--corrupt", "noise:1", "--no-figures"]) == 0
    assert not list((run / "evaluations").glob("*-corruptions.png"))


def test_a_bad_spec_fails_in_one_line_before_evaluating(run, capsys):
    assert main(["evaluate", "--run", str(run), "--corrupt", "contrast@fou"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmanet: error: --corrupt 'contrast@fou': 'contrast' is an image")
    assert "\n" not in err


def test_evaluate_corruptions_is_deterministic_and_its_error_form_follows_the_metric(loaded):
    from mmanet.tasks.classification import ClassificationTask

    model, data, task = loaded
    first = evaluate_corruptions(model, data, task, ["noise:4", "holes:3"], seed=5)
    again = evaluate_corruptions(model, data, task, ["noise:4", "holes:3"], seed=5)
    other = evaluate_corruptions(model, data, task, ["noise:4", "holes:3"], seed=6)
    assert first == again
    assert first["results"] != other["results"]
    assert first["summary"]["noise"]["degradation"] > 0  # noise at severity 4 hurts

    class AccuracyFirst(ClassificationTask):  # a higher-is-better default metric
        default_metric = "accuracy"

    accuracy_task = AccuracyFirst(task.class_names)
    by_accuracy = evaluate_corruptions(model, data, accuracy_task, ["noise:4"], seed=5)
    assert by_accuracy["error_form"] == "100 - value"
    assert by_accuracy["clean_error"] == pytest.approx(first["clean_error"])
    noise = by_accuracy["summary"]["noise"]
    assert noise["mean_error"] == pytest.approx(first["summary"]["noise"]["mean_error"])
    assert re.search(r"^noise +4 ", corruption_table(by_accuracy), re.M)


def test_the_passes_corrupt_every_batch_before_the_encoders(loaded):
    from mmanet.engine.evaluate import combination_counts, combination_scores
    from mmanet.engine.loader import make_loader

    model, data, task = loaded
    masks = list(model.modalities.combinations)
    loader = make_loader(data.test, 128, 0)
    seen = []

    def identity(inputs, batch):
        seen.append(batch)
        return inputs

    def blank_kar(inputs, batch):
        return {**inputs, "kar": torch.zeros_like(inputs["kar"])}

    clean_counts = combination_counts(model, loader, masks, task)
    assert torch.equal(
        combination_counts(model, loader, masks, task, corrupt=identity)[0], clean_counts[0]
    )
    assert seen == list(range(len(loader)))
    blanked = combination_counts(model, loader, masks, task, corrupt=blank_kar)[0]
    assert torch.equal(blanked[0], clean_counts[0][0])  # fou alone: untouched
    assert not torch.equal(blanked[1], clean_counts[0][1])  # kar alone: all zeros now
    clean_scores = combination_scores(model, loader, masks)[0]
    assert torch.equal(combination_scores(model, loader, masks, corrupt=identity)[0], clean_scores)
    blanked = combination_scores(model, loader, masks, corrupt=blank_kar)[0]
    assert torch.equal(blanked[0], clean_scores[0])
    assert not torch.equal(blanked[1], clean_scores[1])


def test_noise_is_scaled_by_the_std_measured_on_the_clean_split(loaded, monkeypatch):
    import mmanet.corruption_eval as corruption_eval

    model, data, task = loaded
    used = []

    class Recording(corruption_eval.BatchCorruption):
        def __init__(self, target, severity, seed, domains):
            used.append(domains)
            super().__init__(target, severity, seed, domains)

    monkeypatch.setattr(corruption_eval, "BatchCorruption", Recording)
    evaluate_corruptions(model, data, task, ["noise:1@fou"])
    views = data.test.views
    assert torch.allclose(
        used[0]["fou"].channel_std, views["fou"].std(0, unbiased=False), atol=1e-4
    )
    assert torch.allclose(
        used[0]["kar"].channel_std, views["kar"].std(0, unbiased=False), atol=1e-4
    )


def test_corruption_targets_of_the_data(loaded):
    _, data, _ = loaded
    domains, ndims = data_domains(data)
    assert ndims == {"fou": 2, "kar": 2} and domains["fou"].pixel_range is None
    assert [t.name for t in corruption_targets(data, ["all"])] == ["noise", "holes", "stuck"]


def test_the_table_shows_the_full_combination_and_averages_with_many(tmp_path):
    names = ["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c", "d"]  # 8 > 7 combinations
    clean = {name: float(i) for i, name in enumerate(names)}
    section = {
        "metric": "error",
        "lower_is_better": True,
        "split": "test",
        "full": "a+b+c",
        "clean": clean,
        "clean_error": sum(clean.values()) / 8,
        "results": [{"label": "noise", "severity": 1, "combinations": {n: 10.0 for n in names}}],
        "summary": {"noise": {"mean_error": 10.0, "degradation": 6.5}},
        "mean_degradation": 6.5,
    }
    text = corruption_table(section)
    header = text.splitlines()[1].split()
    assert header == ["corruption", "sev", "a+b+c", "single-modality", "average", "average"]
    clean_row = text.splitlines()[2].split()
    singles = (0 + 1 + 2 + 7) / 4
    assert clean_row == ["noise", "0", "6.00", f"{singles:.2f}", "3.50"]
    from mmanet.corruption_eval import corruption_figure

    assert corruption_figure(section, Path(tmp_path) / "f.png").is_file()


def test_training_corruption_is_seeded_per_step_and_applied_at_its_rate():
    domains = {"fou": Domain("fou"), "kar": Domain("kar")}
    targets = resolve_specs(["noise", "holes:3@kar"], domains, {"fou": 2, "kar": 2})
    x = {"fou": torch.randn(4, 5, generator=generator()), "kar": torch.randn(4, 3)}
    assert TrainingCorruption(targets, 0.0, 0, domains)(x, 1, 1) is x
    always = TrainingCorruption(targets, 1.0, 0, domains)
    for step in range(20):
        out = always(x, 2, step)
        assert any(not torch.equal(out[m], x[m]) for m in x)
        assert all(torch.equal(out[m], always(x, 2, step)[m]) for m in x)  # (seed, epoch, step)
    assert not torch.equal(always(x, 2, 0)["kar"], always(x, 3, 0)["kar"])
    sometimes = TrainingCorruption(targets, 0.3, 0, domains)
    changed = sum(sometimes(x, 0, step) is not x for step in range(2000))
    assert changed / 2000 == pytest.approx(0.3, abs=0.04)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        TrainingCorruption(targets, 1.5, 0, domains)

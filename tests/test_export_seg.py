"""ONNX export of every built-in network: ESANet (its own SE-add fusion and each fusion
module) on the rendered RGB-D scenes and each fusion module on the classification demo,
trained through the Trainer and exported with ``mmanet export``, every combination
checked with onnxruntime; and the fixed-grid pooling that makes ESANet's context module
exportable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F

from conftest import fast_overrides
from mmanet.cli import main
from mmanet.config import build_config
from mmanet.data import build_data, input_reader
from mmanet.data.render_rgbd import render_dataset
from mmanet.engine import Trainer, load_network
from mmanet.models import UnifiedNetwork
from mmanet.nn.esanet_blocks import PyramidPooling, fixed_grid_avg_pool2d

FUSIONS = ["concat", "hemis", "lcr", "rfnet", "mmformer"]
# two epochs planned, one trained (Trainer.fit(stop_after=1)): a checkpoint without the
# test split's evaluation
SHORT = {
    "optim.epochs": 2,
    "optim.warmup_epochs": 0,
    "optim.milestones": "[]",
    "method.mar.warmup_epochs": 0,
}
SIZE = (64, 96)  # (height, width): ESANet's bottleneck is 2 x 3, pooled to 1 x 1 and 2 x 2
SEG_CONFIG = "configs/rendered/demo.yaml"
TINY = {  # ESANet at the smallest widths that keep every stage
    "model.esanet.width": 8,
    "model.esanet.decoder_channels": "[16,8,8]",
    "model.esanet.context_bins": "[1,2]",
}


def method_for(fusion: str) -> str:
    """The method that trains ``fusion``: its own preset, or modality dropout (SF-MD)."""
    return "sf_md" if fusion in ("default", "concat") else fusion


def export(run: Path, out: Path, capsys) -> dict:
    """``mmanet export`` of ``run`` into ``out``; the sidecar."""
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert "combinations checked with onnxruntime" in capsys.readouterr().out
    return json.loads(out.with_name(out.name + ".json").read_text())


def assert_onnx_matches(path: Path, model: UnifiedNetwork, views: dict[str, torch.Tensor]):
    """onnxruntime on ``views`` for every combination equals PyTorch's logits, with large
    random values in place of the absent modalities (the graph must ignore them)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [*model.modalities, "mask"]
    masks = torch.tensor(model.modalities.combinations, dtype=torch.float32)
    with torch.no_grad():
        expected = model.predict_masks(model.encode(views), masks)  # (c, b, k, ...)
    gen = torch.Generator().manual_seed(1)
    noise = {name: 100 * torch.randn(v.shape, generator=gen) for name, v in views.items()}
    batch = len(next(iter(views.values())))
    for mask, reference in zip(masks, expected, strict=True):
        feed = {
            name: (views[name] if mask[i] > 0 else noise[name]).numpy()
            for i, name in enumerate(model.modalities)
        }
        feed["mask"] = mask.expand(batch, -1).numpy()
        (logits,) = session.run(["logits"], feed)
        np.testing.assert_allclose(logits, reference.numpy(), atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A few rendered RGB-D scenes at SIZE, and their bundle."""
    root = render_dataset(tmp_path_factory.mktemp("rendered"), 4, 2, SIZE, seed=0, n_val=1)
    config = build_config(SEG_CONFIG, seg_overrides(Path("unused"), root, "default"))
    return root, build_data(config.data)


def seg_overrides(out: Path, root: Path, fusion: str, **extra) -> list[str]:
    items = {
        **TINY,
        "data.root": str(root),
        "data.rendered.size": f"[{SIZE[0]},{SIZE[1]}]",
        "data.batch_size": 4,
        "data.eval_batch_size": 4,
        "model.fusion": fusion,
        "method.name": method_for(fusion),
        **extra,
    }
    return fast_overrides(out, **{**SHORT, **items})


@pytest.mark.parametrize(
    ("fusion", "context"),
    [("default", "ppm"), ("default", "ppm_adaptive")] + [(f, "ppm") for f in FUSIONS],
)
def test_esanet_exports_and_matches_onnxruntime_for_every_combination(
    rendered, fusion, context, tmp_path, capsys
):
    root, bundle = rendered
    run = tmp_path / "run"
    config = build_config(
        SEG_CONFIG, seg_overrides(run, root, fusion, **{"model.esanet.context": context})
    )
    Trainer(config, bundle).fit(stop_after=1)
    out = tmp_path / "esanet.onnx"
    sidecar = export(run, out, capsys)

    assert list(sidecar["max_abs_difference"]) == ["rgb", "depth", "rgb+depth"]
    assert max(sidecar["max_abs_difference"].values()) <= 1e-4
    assert sidecar["outputs"]["logits"] == ["batch", 10, *SIZE]  # (b, classes, h, w)
    assert sidecar["shapes"].startswith("only the batch dimension is free")
    reader = input_reader(config.data)  # the rendered scenes' reader: the test split's inputs
    for name, channels in (("rgb", 3), ("depth", 1)):
        record = sidecar["inputs"][name]
        assert record == {
            "shape": ["batch", channels, *SIZE],
            "dtype": "float32",
            "preprocessing": reader.describe(name),
        }
        assert (
            f"resized ({'bilinear' if name == 'rgb' else 'nearest'}) to {SIZE[0]}×{SIZE[1]}"
            in record["preprocessing"]
        )
    assert "ImageNet mean" in sidecar["inputs"]["rgb"]["preprocessing"]
    assert "millimetres" in sidecar["inputs"]["depth"]["preprocessing"]
    assert "(depth − 1750.5)/758.9" in sidecar["inputs"]["depth"]["preprocessing"]

    # independently: the test scenes, every combination, garbage in the absent modality
    model, _ = load_network(run)
    views = {
        name: torch.stack([bundle.test[i][0][name] for i in range(len(bundle.test))])
        for name in model.modalities
    }
    assert_onnx_matches(out, model, views)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_each_fusion_on_the_classification_demo_matches_onnxruntime(
    mfeat, fusion, tmp_path, capsys
):
    run = tmp_path / "run"
    short = {**SHORT, "method.name": method_for(fusion), "model.fusion": fusion}
    config = build_config("configs/mfeat/demo.yaml", fast_overrides(run, **short))
    Trainer(config, mfeat).fit(stop_after=1)
    out = tmp_path / "demo.onnx"
    sidecar = export(run, out, capsys)
    assert len(sidecar["max_abs_difference"]) == 63
    assert max(sidecar["max_abs_difference"].values()) <= 1e-4
    assert sidecar["outputs"]["logits"] == ["batch", 10]
    model, _ = load_network(run)
    views = {name: mfeat.test.views[name][:5] for name in mfeat.modalities}
    assert_onnx_matches(out, model, views)


@pytest.mark.parametrize(
    ("size", "grid"),
    [((1, 2), (2, 2)), ((1, 1), (3, 3)), ((3, 4), (1, 1)), ((6, 9), (5, 5)), ((7, 5), (2, 3))],
)
def test_the_fixed_grid_pooling_is_adaptive_average_pooling(size, grid):
    x = torch.randn(2, 3, *size)
    expected = F.adaptive_avg_pool2d(x, grid)
    torch.testing.assert_close(fixed_grid_avg_pool2d(x, grid), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("reference", [None, (2, 2)])
def test_pyramid_pooling_under_export_equals_its_pytorch_output(reference, monkeypatch):
    """The export path (fixed grid) gives PyTorch's output, ``ppm`` and ``ppm_adaptive``
    (whose grid scales with the input: 7 x 9 against a 2 x 2 reference)."""
    torch.manual_seed(0)
    pool = PyramidPooling(8, 4, (1, 3), reference).eval()
    x = torch.randn(2, 8, 7, 9)
    with torch.no_grad():
        expected = pool(x)
        monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
        torch.testing.assert_close(pool(x), expected, atol=1e-6, rtol=0)

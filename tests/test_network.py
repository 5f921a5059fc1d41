"""The unified network: missing modalities, masks, one encoder pass for every combination."""

from __future__ import annotations

import pytest
import torch

from mmanet.config import ModelConfig
from mmanet.engine import combination_confusions, make_loader
from mmanet.modality import all_masks
from mmanet.models import build_model
from mmanet.tasks import ClassificationTask

SHAPES = {"a": (5,), "b": (3,), "c": (12,)}


def small_model(reg_head: bool = False):
    torch.manual_seed(0)
    cfg = ModelConfig(head_widths=[8])
    cfg.encoder.widths = [6, 4]
    cfg.encoders = {"c": type(cfg.encoder)(type="cnn", widths=[4, 5], image_shape=[1, 3, 4])}
    return build_model(cfg, list(SHAPES), SHAPES, num_classes=3, reg_head=reg_head).eval()


def batch(n: int = 4) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {name: torch.randn(n, *shape, generator=gen) for name, shape in SHAPES.items()}


def test_missing_modality_is_zeros_and_its_encoder_is_not_run():
    model = small_model()
    inputs = batch()
    calls = []
    model.encoders["b"].register_forward_hook(lambda *a: calls.append("b"))
    partial = {k: v for k, v in inputs.items() if k != "b"}
    encoded = model.encode(partial)
    assert calls == []
    assert encoded.features[1].shape == (4, 4)
    assert torch.count_nonzero(encoded.features[1]) == 0
    assert encoded.present.tolist() == [1.0, 0.0, 1.0]
    # Same output as giving b and masking it out per sample.
    masked = model(inputs, torch.tensor([[1.0, 0.0, 1.0]] * 4))
    assert torch.allclose(model(partial).logits, masked.logits, atol=1e-6)


def test_per_sample_mask_zeroes_features_before_fusion():
    model = small_model()
    inputs = batch()
    mask = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    out = model(inputs, mask)
    for i in range(4):
        present = {n: inputs[n][i : i + 1] for j, n in enumerate(SHAPES) if mask[i, j]}
        alone = model(present)
        assert torch.allclose(out.logits[i], alone.logits[0], atol=1e-5)


def test_predict_masks_matches_one_forward_per_mask():
    model = small_model()
    inputs = batch()
    masks = torch.tensor(all_masks(3), dtype=torch.float32)
    logits = model.predict_masks(model.encode(inputs), masks, max_rows=12)
    assert logits.shape == (7, 4, 3)
    for i, mask in enumerate(masks):
        expected = model(inputs, mask.expand(4, -1)).logits
        assert torch.allclose(logits[i], expected, atol=1e-5)


def test_all_combinations_run_each_encoder_once_per_batch(mfeat):
    model = build_model(ModelConfig(), mfeat.modalities, mfeat.input_shapes, 10)
    calls = {name: 0 for name in mfeat.modalities}
    for name, encoder in model.encoders.items():
        encoder.register_forward_hook(
            lambda *a, name=name: calls.__setitem__(name, calls[name] + 1)
        )
    loader = make_loader(mfeat.test, batch_size=128, num_workers=0)
    masks = all_masks(len(mfeat.modalities))
    task = ClassificationTask(mfeat.class_names)
    confusions = combination_confusions(model, loader, masks, task)
    assert confusions.shape == (63, 10, 10)
    assert all(int(c.sum()) == len(mfeat.test) for c in confusions)
    assert set(calls.values()) == {len(loader)}


def test_unknown_or_no_modality_is_an_error():
    model = small_model()
    with pytest.raises(KeyError, match="unknown modality 'd'"):
        model.encode({"d": torch.zeros(2, 1)})
    with pytest.raises(ValueError, match="no modality given"):
        model.encode({})


def test_deployment_state_dict_excludes_the_regularization_head():
    model = small_model(reg_head=True)
    keys = model.deployment_state_dict()
    assert not any(k.startswith("reg_head.") for k in keys)
    assert any(k.startswith("reg_head.") for k in model.state_dict())


def test_factorised_concat_head_equals_explicit_fusion_for_every_mask():
    from mmanet.config import ModelConfig
    from mmanet.modality import all_masks
    from mmanet.models import build_model

    shapes = {f"v{i}": (5 + i,) for i in range(4)}
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="multiview"), list(shapes), shapes, 3, False).eval()
    inputs = {k: torch.randn(7, *s) for k, s in shapes.items() if k != "v2"}  # v2 not given
    masks = torch.tensor(all_masks(4), dtype=torch.float32)
    encoded = net.encode(inputs)
    with torch.no_grad():
        fast = net.predict_masks(encoded, masks)
        explicit = torch.stack([net.fuse(encoded, mask.expand(7, -1)).logits for mask in masks])
    assert fast.shape == (15, 7, 3)
    torch.testing.assert_close(fast, explicit, rtol=1e-5, atol=1e-5)

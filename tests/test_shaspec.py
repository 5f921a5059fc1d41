"""ShaSpec (docs/methods/shaspec.md): the fill of a missing modality, the residual fusion,
DAO and DCO by hand, the weights of the terms in a real step, the two stages of the masks,
the networks on every builder, a short run on the bundled demo evaluated and exported over
every combination, and the paper configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import fast_overrides
from mmanet.cli import main
from mmanet.config import ModelConfig, build_config
from mmanet.data import build_data, collate
from mmanet.data.render_rgbd import render_dataset
from mmanet.engine import Trainer
from mmanet.errors import ConfigError
from mmanet.experiment import demo_config_path
from mmanet.fusion.shaspec import ShaSpecFusion
from mmanet.losses.shaspec import dao_loss, dao_pairs, dco_loss
from mmanet.modality import all_masks
from mmanet.models import build_model
from mmanet.models.esanet import ESANetSettings
from mmanet.shaspec import ShaSpecSettings, first_dropout_epoch
from test_export_seg import SEG_CONFIG, SIZE, export
from test_export_seg import TINY as SEG_TINY
from test_sf import NETWORK_AUTHORS, SE, STEM_AUTHORS

MODALITIES = ["fou", "kar", "mor"]
MASKS = torch.tensor(all_masks(3) * 2, dtype=torch.float32)  # every combination twice
CONFIGS = Path(__file__).parents[1] / "configs"


def fusion_inputs(batch: int = 4, width: int = 3, m: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 2 * width, generator=gen) for _ in range(m)]


# -- the fusion: fill and residual ---------------------------------------------------------


def test_a_missing_modality_is_the_mean_of_the_available_shared_features():
    torch.manual_seed(0)
    fusion = ShaSpecFusion([6, 6, 6], vectors=True)
    features = fusion_inputs()
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 1, 1]]).float()
    fused = fusion(features, mask).reshape(4, 3, 3)  # (b, m, d)
    shared = [x[:, :3] for x in features]
    conv = fusion.residual.weight[:, :, 0, 0]  # (d, 2d)
    for row in range(4):
        present = [i for i in range(3) if mask[row, i]]
        fill = torch.stack([shared[i][row] for i in present]).mean(dim=0)
        for i in range(3):
            # present: f_i = r_i + W [r_i ; s_i]; absent: the mean of the present r_j
            own = shared[i][row] + conv @ features[i][row]
            torch.testing.assert_close(fused[row, i], own if i in present else fill)


def test_the_absent_modality_changes_nothing_however_large():
    torch.manual_seed(0)
    fusion = ShaSpecFusion([6, 6, 6], vectors=True)
    features = fusion_inputs()
    mask = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]).float()
    before, parts = fusion.forward_shared_specific(features, mask)
    noisy = [
        torch.where(mask[:, i, None] > 0, x, torch.full_like(x, float("nan")) if i else 1e6)
        for i, x in enumerate(features)
    ]
    after, noisy_parts = fusion.forward_shared_specific(noisy, mask)
    torch.testing.assert_close(after, before)
    for i, logits in enumerate(noisy_parts.domain_logits):
        present = mask[:, i] > 0
        torch.testing.assert_close(logits[present], parts.domain_logits[i][present])
    assert all((s[mask[:, i] == 0] == 0).all() for i, s in enumerate(noisy_parts.shared))


def test_the_domain_classifier_reads_the_pooled_specific_features():
    torch.manual_seed(0)
    fusion = ShaSpecFusion([8, 8], vectors=False)  # maps: d = 4
    gen = torch.Generator().manual_seed(1)
    features = [torch.randn(2, 8, 3, 5, generator=gen) for _ in range(2)]
    mask = torch.ones(2, 2)
    _, parts = fusion.forward_shared_specific(features, mask)
    for i, x in enumerate(features):
        pooled = x[:, 4:].mean(dim=(2, 3))  # the specific half, averaged over positions
        expected = pooled @ fusion.domain_classifier.weight.T + fusion.domain_classifier.bias
        torch.testing.assert_close(parts.domain_logits[i], expected)
    other_shared = [torch.cat([x[:, :4] * 7 + 1, x[:, 4:]], dim=1) for x in features]
    _, moved = fusion.forward_shared_specific(other_shared, mask)
    for a, b in zip(parts.domain_logits, moved.domain_logits, strict=True):
        torch.testing.assert_close(a, b)


# -- DAO and DCO by hand --------------------------------------------------------------------


def test_dao_pairs_follow_the_authors_cycle():
    assert dao_pairs(4) == [(0, 1), (0, 3), (1, 2), (2, 3)]  # 0-1, 1-2, 2-3, 3-0
    assert dao_pairs(3) == [(0, 1), (0, 2), (1, 2)]
    assert dao_pairs(2) == [(0, 1)]  # the cycle 0-1, 1-0 is one pair
    assert dao_pairs(1) == []


def test_dao_by_hand():
    shared = [
        torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]),
        torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]]),
        torch.tensor([[0.0, 0.0], [4.0, 1.0], [1.0, 1.0]]),
    ]
    mask = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 1]]).float()
    # (0, 1): sample 0 only: (|1-2| + |2-0|) / 2 = 1.5
    # (0, 2): sample 2 only: (|3-1| + |-1-1|) / 2 = 2
    # (1, 2): sample 1 only: (|1-4| + |1-1|) / 2 = 1.5
    assert float(dao_loss(shared, mask)) == pytest.approx(1.5 + 2.0 + 1.5)
    both = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1]]).float()
    expected = sum(float((shared[i] - shared[j]).abs().mean()) for i, j in [(0, 1), (0, 2), (1, 2)])
    assert float(dao_loss(shared, both)) == pytest.approx(expected)
    assert dao_loss(shared, torch.eye(3)) is None  # no sample has two modalities


def test_dco_by_hand():
    logits = [
        torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),  # modality 0's specific features
        torch.tensor([[0.0, 3.0, 1.0], [1.0, 1.0, 1.0]]),  # modality 1's
        torch.tensor([[5.0, 5.0, 5.0], [0.0, 0.0, 2.0]]),  # modality 2's
    ]
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]]).float()
    entries = [(0, 0), (0, 1), (1, 0), (1, 2)]  # (sample, modality) present

    def ce(row: torch.Tensor, target: int) -> float:
        return float(torch.logsumexp(row, 0) - row[target])

    expected = sum(ce(logits[i][b], i) for b, i in entries) / len(entries)
    assert float(dco_loss(logits, mask)) == pytest.approx(expected, rel=1e-6)


# -- a real step: the weights and the two stages --------------------------------------------


@pytest.fixture(scope="module")
def data():
    return build_data(build_config(demo_config_path(), ["data.modalities=[fou,kar,mor]"]).data)


def shaspec_trainer(out, data, **extra) -> Trainer:
    settings = {
        "method.name": "shaspec",
        "data.modalities": "[fou,kar,mor]",
        "model.encoder.widths": "[16,8]",
        "model.head_widths": "[16]",
        **extra,
    }
    return Trainer(build_config(demo_config_path(), fast_overrides(out, **settings)), data)


def test_the_step_adds_dao_and_dco_with_their_weights(tmp_path, data):
    trainer = shaspec_trainer(tmp_path, data, **{"method.shaspec.dropout_from": 1})
    assert trainer.cfg.method.shaspec == ShaSpecSettings(dropout_from=1)
    assert trainer.cfg.method.terms == {"shaspec_dao": 0.1, "shaspec_dco": 0.02}
    inputs, labels = collate([data.train[i] for i in range(len(MASKS))])
    model = trainer.objective.model
    model.eval()  # the same forward as the step's, without batch statistics moving
    with torch.no_grad():
        out = model.fuse(model.encode(inputs), MASKS, extras=True)
        dao = dao_loss(out.shared_specific.shared, MASKS)
        dco = dco_loss(out.shared_specific.domain_logits, MASKS)
        task = F.cross_entropy(out.logits, labels)
        loss, terms, _ = trainer.objective(inputs, labels, MASKS)
    assert float(terms["loss_shaspec_dao"]) == pytest.approx(float(dao), rel=1e-5)  # unweighted
    assert float(terms["loss_shaspec_dco"]) == pytest.approx(float(dco), rel=1e-5)
    assert float(loss) == pytest.approx(float(task + 0.1 * dao + 0.02 * dco), rel=1e-5)


def test_all_modalities_before_the_stage_boundary_random_subsets_after(tmp_path, data):
    trainer = shaspec_trainer(tmp_path, data, **{"method.shaspec.dropout_from": 3})
    inputs, labels = collate([data.train[i] for i in range(48)])
    masks = {}
    for epoch in (1, 2, 3, 4):
        _, _, _, mask = trainer.step(dict(inputs), labels.clone(), None, epoch=epoch)
        masks[epoch] = mask
    assert all(bool((masks[e] == 1).all()) for e in (1, 2))
    for epoch in (3, 4):
        assert (masks[epoch].sum(dim=1) < 3).any() and (masks[epoch].sum(dim=1) >= 1).all()


def test_the_default_stage_boundary_is_their_share_of_the_iterations():
    def boundary(*overrides: str) -> int:
        return first_dropout_epoch(build_config(overrides=["method.name=shaspec", *overrides]))

    assert boundary() == 45  # 4/9 of 100 epochs on all modalities: their 80 000 of 180 000
    assert boundary("optim.epochs=300") == 134
    assert boundary("optim.epochs=3", "optim.warmup_epochs=1") == 2
    assert boundary("method.shaspec.dropout_from=1") == 1
    with pytest.raises(ConfigError, match=r"dropout_from must be >= 1"):
        build_config(overrides=["method.name=shaspec", "method.shaspec.dropout_from=0"])


# -- the networks ---------------------------------------------------------------------------

TINY_ESANET = ESANetSettings(
    encoder="resnet18", block="basic", width=8, decoder_channels=[16, 8, 8], decoder_blocks=1,
    context_bins=[1, 2],
)  # fmt: skip
NETWORKS = {
    "multiview": (ModelConfig(name="multiview", head_norm="layer"), {"a": (5,), "b": (9,)}, 3),
    "sf": (ModelConfig(name="sf"), {"rgb": (3, 32, 32), "depth": (1, 32, 32)}, 2),
    "esanet": (
        ModelConfig(name="esanet", entries={"esanet": TINY_ESANET}),
        {"rgb": (3, 32, 48), "depth": (1, 32, 48)},
        4,
    ),
}


@pytest.mark.parametrize("builder", list(NETWORKS))
def test_one_pass_evaluation_equals_fusing_each_mask(builder):
    """predict_masks sees every modality's real input and masks it; the plain forward is
    given only the present ones (zeros for the others): equal, so an absent modality's
    input reaches nothing."""
    cfg, shapes, classes = NETWORKS[builder]
    cfg = ModelConfig(**{**vars(cfg), "fusion": "shaspec"})
    torch.manual_seed(0)
    net = build_model(cfg, list(shapes), shapes, classes, False).eval()
    gen = torch.Generator().manual_seed(0)
    inputs = {name: torch.randn(3, *shape, generator=gen) for name, shape in shapes.items()}
    masks = torch.tensor(all_masks(2), dtype=torch.float32)
    with torch.no_grad():
        encoded = net.encode(inputs)
        every = net.predict_masks(encoded, masks)
        for c, mask in enumerate(masks):
            given = {n: x for n, x, bit in zip(shapes, inputs.values(), mask, strict=True) if bit}
            torch.testing.assert_close(every[c], net(given).logits, rtol=1e-4, atol=1e-4)
        parts = net.fuse(encoded, masks[[0, 2, 2]], extras=True).shared_specific
    assert len(parts.shared) == len(parts.specific) == len(parts.domain_logits) == 2
    assert parts.domain_logits[0].shape == (3, 2)
    shared = [m for m in net.fusion.modules() if m is net.fusion.shared]
    assert len(shared) == 1  # one shared encoder, registered once


def test_the_views_must_end_in_one_width():
    cfg = ModelConfig(name="multiview", fusion="shaspec")
    cfg.encoders = {"b": type(cfg.encoder)(widths=[8, 4])}
    with pytest.raises(ConfigError, match=r"modality 'b'.s encoder ends in width 4"):
        build_model(cfg, ["a", "b"], {"a": (5,), "b": (9,)}, 3, False)


def test_the_terms_need_the_shaspec_network(tmp_path, data):
    overrides = {"method.terms": "{shaspec_dao: 1.0}", "method.name": "sf_md"}
    trainer = shaspec_trainer(tmp_path, data, **overrides)
    inputs, labels = collate([data.train[i] for i in range(4)])
    with pytest.raises(ConfigError, match=r"need model\.fusion=shaspec"):
        trainer.objective(inputs, labels, torch.ones(4, 3))


# -- end to end ------------------------------------------------------------------------------


def test_a_short_run_on_the_demo_is_evaluated_and_exported_over_every_combination(tmp_path):
    run = tmp_path / "run"
    overrides = fast_overrides(
        run,
        **{
            "method.name": "shaspec",
            "method.shaspec.dropout_from": 2,
            "optim.epochs": 3,
            "optim.milestones": "[2]",
            "data.modalities": "[fou,kar,mor]",
            "model.encoder.widths": "[32,16]",
            "model.head_widths": "[32]",
        },
    )
    assert main(["train", "--config", str(demo_config_path()), *overrides]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").open()]
    trained = [{k.split("/")[1] for k in row if k.startswith("train_acc/")} for row in log]
    assert trained[0] == {"fou+kar+mor"} and len(trained[1]) == 7
    assert all(row["loss_shaspec_dao"] > 0 and row["loss_shaspec_dco"] > 0 for row in log)
    report = json.loads((run / "results_test.json").read_text())
    assert len(report["combinations"]) == 7
    assert report["average"]["error"] < 90  # better than chance on 10 classes
    assert "dropout_from: 2" in (run / "config.yaml").read_text()
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "m.onnx")]) == 0


# -- the paper configs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "boundary"), [("casia_surf", 45), ("cefa", 45), ("nyuv2", 134)]
)
def test_the_paper_configs_build_their_full_size_network(dataset, boundary):
    config = build_config(CONFIGS / dataset / "shaspec.yaml", ["model.pretrained=null"])
    assert config.method.name == "shaspec" and config.model.fusion == "shaspec"
    assert config.method.shaspec == ShaSpecSettings(dropout_from=boundary)
    assert config.method.terms == {"shaspec_dao": 0.1, "shaspec_dco": 0.02}
    faces = dataset != "nyuv2"
    assert config.method.mask_probabilities == ([1, 1, 1, 1, 1, 1, 3] if faces else [1, 1, 2])
    if faces:
        shapes = {name: (3, 112, 112) for name in ("rgb", "depth", "ir")}
    else:
        shapes = {"rgb": (3, 480, 640), "depth": (1, 480, 640)}
    with torch.device("meta"):
        model = build_model(config.model, list(shapes), shapes, 2, False).eval()
        batch = {name: torch.empty(2, *shape) for name, shape in shapes.items()}
        out = model.fuse(model.encode(batch), torch.ones(2, len(shapes)), extras=True)
    params = sum(p.numel() for p in model.parameters())
    if faces:  # the SF network with one more stem, the residual conv, the domain classifier
        shared = STEM_AUTHORS + SE
        assert params == NETWORK_AUTHORS + shared + 3 * 3 * 256 * 128 + (128 * 3 + 3)
        assert out.fused.shape == (2, 384, 14, 14) and out.logits.shape == (2, 2)
        assert out.shared_specific.shared[0].shape == (2, 128, 14, 14)
        return
    assert config.model.esanet.encoder == "resnet50"
    assert out.fused.map.shape == (2, 512, 15, 20)
    assert [x.shape[1:] for x in out.fused.skips] == [
        (1024, 30, 40),
        (512, 60, 80),
        (256, 120, 160),
    ]
    assert out.shared_specific.specific[1].shape == (2, 512, 15, 20)
    assert out.logits.shape == (2, 2, 480, 640)


def test_shaspec_on_esanet_trains_and_exports_for_every_combination(tmp_path, capsys):
    root = render_dataset(tmp_path / "rendered", 4, 2, SIZE, seed=0, n_val=1)
    run = tmp_path / "run"
    overrides = {
        **SEG_TINY,
        "data.root": str(root),
        "data.rendered.size": f"[{SIZE[0]},{SIZE[1]}]",
        "data.batch_size": 4,
        "data.eval_batch_size": 4,
        "method.name": "shaspec",
        "method.shaspec.dropout_from": 2,
        "optim.epochs": 2,
        "optim.warmup_epochs": 0,
        "optim.milestones": "[]",
    }
    config = build_config(SEG_CONFIG, fast_overrides(run, **overrides))
    Trainer(config).fit(stop_after=1)
    sidecar = export(run, tmp_path / "esanet.onnx", capsys)
    assert list(sidecar["max_abs_difference"]) == ["rgb", "depth", "rgb+depth"]
    assert max(sidecar["max_abs_difference"].values()) <= 1e-4

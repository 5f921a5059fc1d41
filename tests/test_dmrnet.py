"""DMRNet (docs/methods/dmrnet.md): the probabilistic embedding, its KL term, the
hard-combination term on exactly the hard samples and from its start epoch, the mined or
fixed hard set, the terms' weights (``method.terms``, applied once by the loop, a weight
of 0 skipping the term), a short training run of ``method.name=dmrnet`` evaluated on every
combination, and the paper configs. Every expected value is computed here by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from mmanet import testing
from mmanet.config import ModelConfig, build_config, to_dict
from mmanet.dmrnet import DMRNetSettings, hard_set_miner
from mmanet.engine import Trainer, load_network
from mmanet.engine.mining import omega_source
from mmanet.engine.objective import Step, needs_reg_head
from mmanet.errors import ConfigError
from mmanet.experiment import demo_config_path
from mmanet.losses.dmrnet import aux_term, hard_rows, hard_term, kl_divergence, kl_term
from mmanet.methods import method_network
from mmanet.modality import all_masks
from mmanet.models import build_model
from mmanet.models.esanet import ESANetSettings
from mmanet.models.probabilistic import ProbabilisticHead
from mmanet.nn.probabilistic import ProbabilisticEmbedding
from mmanet.outputs import GaussianEmbedding, NetworkOutput
from mmanet.registry import LOSS_TERMS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODALITIES = ["rgb", "depth", "ir"]
MASKS = torch.tensor(all_masks(3), dtype=torch.float32)  # the 7 combinations, one per row
TINY = [*testing.TINY, "method.name=dmrnet"]


# -- the KL term -------------------------------------------------------------------------


def test_kl_is_summed_over_c_h_w_and_averaged_over_the_batch():
    mu = torch.tensor([[[[0.5, -1.0]], [[0.0, 2.0]]], [[[1.0, 0.0]], [[0.0, 0.0]]]])  # (2,2,1,2)
    logvar = torch.tensor([[[[0.0, 1.0]], [[-1.0, 0.0]]], [[[0.0, 0.0]], [[0.0, 2.0]]]])
    per_sample = []
    for b in range(2):
        total = 0.0
        for c in range(2):
            for w in range(2):
                m, lv = float(mu[b, c, 0, w]), float(logvar[b, c, 0, w])
                total += 0.5 * (math.exp(lv) + m * m - lv - 1.0)
        per_sample.append(total)
    expected = sum(per_sample) / 2
    assert kl_divergence(GaussianEmbedding(mu, logvar)) == pytest.approx(expected, rel=1e-6)
    # per pixel (segmentation): summed over c, averaged over the b * h * w = 4 pixels
    assert kl_divergence(GaussianEmbedding(mu, logvar), "pixel") == pytest.approx(
        expected * 2 / 4, rel=1e-6
    )
    # N(0, I) itself: no divergence
    assert float(kl_divergence(GaussianEmbedding(torch.zeros(3, 4), torch.zeros(3, 4)))) == 0.0


def fake_step(logits, labels, mask, epoch, reg_rows=None, embedding=None, task="classification"):
    task_object = SimpleNamespace(
        name=task,
        loss=lambda logits, labels: F.cross_entropy(logits, labels),
        side_loss=lambda sides, labels: 0.0,
    )
    out = NetworkOutput(None, logits, logits, embedding=embedding)
    model = SimpleNamespace(modalities=MODALITIES)
    return SimpleNamespace(
        out=out, labels=labels, mask=mask, epoch=epoch, reg_rows=reg_rows, task=task_object,
        model=model,
    )  # fmt: skip


def test_kl_term_is_unweighted_and_starts_after_its_epoch():
    embedding = GaussianEmbedding(torch.ones(2, 3), torch.zeros(2, 3))  # KL = 0.5 * 3 per sample
    settings = DMRNetSettings(kl_after=2)
    step = fake_step(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), MASKS[:2], 2, None,
                     embedding)  # fmt: skip
    assert kl_term(step, settings) is None  # epoch 2: not yet
    step.epoch = 3
    assert float(kl_term(step, settings)) == pytest.approx(1.5)  # the loop weighs it


# -- the hard-combination term -----------------------------------------------------------

HARD = ["rgb", "ir", "rgb+ir"]  # the authors' CASIA-SURF set


def hard_rows_by_hand(names) -> list[int]:
    wanted = set()
    for name in names:
        wanted.add(tuple(int(m in name.split("+")) for m in MODALITIES))
    return [i for i, row in enumerate(MASKS.int().tolist()) if tuple(row) in wanted]


def test_the_hard_term_is_the_loss_on_exactly_the_hard_rows():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 2, generator=gen)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    settings = DMRNetSettings(hard_after=5, hard_set=HARD)
    rows = hard_rows_by_hand(HARD)
    assert len(rows) == 3
    per_sample = F.cross_entropy(logits, labels, reduction="none")
    expected = float(per_sample[rows].sum()) / 7  # the authors': sum over rows / b
    value = hard_term(fake_step(logits, labels, MASKS, 6), settings)
    assert float(value) == pytest.approx(expected, rel=1e-6)
    # the rows outside the set do not change it; a hard row does
    others = [i for i in range(7) if i not in rows]
    changed = logits.clone()
    changed[others] = torch.randn(len(others), 2, generator=gen) * 10
    assert float(hard_term(fake_step(changed, labels, MASKS, 6), settings)) == pytest.approx(
        expected, rel=1e-6
    )
    changed[rows[0]] += torch.tensor([5.0, -5.0])
    assert float(hard_term(fake_step(changed, labels, MASKS, 6), settings)) != pytest.approx(
        expected, rel=1e-3
    )
    rows_mean = DMRNetSettings(hard_set=HARD, hard_reduction="rows")
    assert float(hard_term(fake_step(logits, labels, MASKS, 6), rows_mean)) == pytest.approx(
        float(per_sample[rows].mean()), rel=1e-6
    )


def test_the_hard_term_starts_after_its_epoch():
    logits, labels = torch.randn(7, 2), torch.zeros(7, dtype=torch.long)
    settings = DMRNetSettings(hard_after=5, hard_set=HARD)
    assert hard_term(fake_step(logits, labels, MASKS, 5), settings) is None
    assert hard_term(fake_step(logits, labels, MASKS, 6), settings) is not None


def test_mined_hard_set_is_the_steps_omega_rows_and_fixed_is_by_name():
    logits, labels = torch.randn(7, 2), torch.ones(7, dtype=torch.long)
    mined = DMRNetSettings(hard_after=0)
    # before Ω is mined: no rows, no term
    assert hard_rows(MASKS, "mined", MODALITIES, None) is None
    assert hard_term(fake_step(logits, labels, MASKS, 9), mined) is None
    omega_rows = torch.tensor([1, 4])
    assert hard_rows(MASKS, "mined", MODALITIES, omega_rows) is omega_rows
    value = hard_term(fake_step(logits, labels, MASKS, 9, reg_rows=omega_rows), mined)
    per_sample = F.cross_entropy(logits, labels, reduction="none")
    assert float(value) == pytest.approx(float(per_sample[[1, 4]].sum()) / 7, rel=1e-6)
    # fixed: by name, in any modality order, whatever Ω says
    fixed = hard_rows(MASKS, ["ir+rgb", "depth"], MODALITIES, omega_rows)
    assert fixed.tolist() == hard_rows_by_hand(["rgb+ir", "depth"])
    # the run mines MAR's Ω for "mined" only, and only while the hard term weighs > 0: what
    # dmrnet_hard declares (omega_from), not an attribute of the function
    method = build_config(overrides=["method.name=dmrnet"]).method
    assert omega_source(method) == "mar" and hard_set_miner(method) == "mar"
    assert LOSS_TERMS.declared("dmrnet_hard", "omega_from") is hard_set_miner
    assert not hasattr(LOSS_TERMS.get("dmrnet_hard"), "omega")
    method = build_config(overrides=["method.name=dmrnet", "method.dmrnet.hard_set=[a]"]).method
    assert omega_source(method) == "none"
    method = build_config(overrides=["method.name=dmrnet", "method.terms.dmrnet_hard=0"]).method
    assert omega_source(method) == "none"


def test_bad_hard_sets_are_one_line_errors():
    with pytest.raises(ConfigError, match="hard_set must be 'mined' or a list"):
        build_config(overrides=["method.name=dmrnet", "method.dmrnet.hard_set=weak"])
    config = build_config(overrides=["method.name=dmrnet", "method.dmrnet.hard_set=[fou+rgb]"])
    network = build_model(config.model, ["fou", "kar"], {"fou": (4,), "kar": (5,)}, 3)
    with pytest.raises(ConfigError, match="'fou\\+rgb' is not a combination of fou\\+kar"):
        method_network(network, config.method)


# -- the probabilistic embedding ---------------------------------------------------------


def test_the_embedding_samples_in_training_and_is_mu_at_evaluation():
    torch.manual_seed(0)
    embedding = ProbabilisticEmbedding(4, spatial=True)
    x = torch.randn(8, 4, 3, 3)
    embedding.eval()
    z1, mu, logvar = embedding(x)
    z2, _, _ = embedding(x)
    assert torch.equal(z1, z2) and torch.equal(z1, mu)
    embedding.train()
    torch.manual_seed(5)
    z, mu, logvar = embedding(x)
    torch.manual_seed(5)
    assert torch.allclose(z, mu + torch.randn_like(mu) * (0.5 * logvar).exp())  # μ + ε·σ
    with torch.no_grad():
        draws = torch.stack([embedding(x)[0] for _ in range(500)])
    assert not torch.equal(draws[0], draws[1])
    eps = (draws - mu.detach()) / (0.5 * logvar.detach()).exp()  # ε ~ N(0, 1): E z = μ
    assert abs(float(eps.mean())) < 0.02 and abs(float(eps.std()) - 1.0) < 0.02


def sf_network():
    torch.manual_seed(0)
    shapes = {name: (3, 32, 32) for name in MODALITIES}
    config = build_config(overrides=["method.name=dmrnet"])
    network = build_model(ModelConfig(name="sf"), MODALITIES, shapes, 2)
    return method_network(network, config.method), shapes


def test_sf_embedding_sits_on_the_layer4_map_before_pooling():
    network, shapes = sf_network()
    head = network.head
    assert isinstance(head, ProbabilisticHead) and head.place == "layer4"
    inputs = {name: torch.randn(2, *shape) for name, shape in shapes.items()}
    network.eval()
    out = network(inputs)
    again = network(inputs)
    assert torch.equal(out.logits, again.logits)  # deterministic deployment network
    layer4 = head.head.layer4(head.head.layer3(out.fused))
    mu = head.embedding.mu(layer4)
    assert torch.allclose(out.embedding.mu, mu) and out.embedding.mu.shape == (2, 512, 1, 1)
    assert torch.allclose(out.logits, head.head.fc(mu.mean(dim=(2, 3))), atol=1e-6)
    network.train()
    first, second = network(inputs), network(inputs)
    assert not torch.equal(first.logits, second.logits)  # z is sampled in training


def test_esanet_embedding_sits_after_the_context_module_and_feeds_both_decoders():
    torch.manual_seed(0)
    esanet = ESANetSettings(width=8, decoder_channels=[32, 16, 8], decoder_blocks=1)
    cfg = ModelConfig(name="esanet", entries={"esanet": esanet})
    shapes = {"rgb": (3, 32, 32), "depth": (1, 32, 32)}
    config = build_config(overrides=["method.name=dmrnet"])
    network = build_model(cfg, ["rgb", "depth"], shapes, 5, reg_head=True)
    network = method_network(network, config.method)
    assert network.head.place == "context"
    inputs = {"rgb": torch.randn(2, 3, 32, 32), "depth": torch.randn(2, 1, 32, 32)}
    network.eval()
    encoded = network.encode(inputs)
    out = network.fuse(encoded, extras=True)
    context = network.fusion(encoded.features, torch.ones(2, 2)).context
    assert torch.allclose(out.embedding.mu, network.head.embedding.mu(context), atol=1e-6)
    assert torch.equal(out.fused.context, out.embedding.mu)  # what the aux decoder reads
    assert out.logits.shape == (2, 5, 32, 32)
    # per-pixel KL for segmentation ("auto")
    step = fake_step(out.logits, None, None, 11, embedding=out.embedding, task="segmentation")
    settings = DMRNetSettings(kl_after=10)
    expected = kl_divergence(out.embedding, "pixel")
    assert torch.allclose(kl_term(step, settings), expected)


def test_the_auxiliary_decoder_term_is_the_reg_heads_loss_on_the_incomplete_samples(tmp_path):
    off = ["method.terms.dmrnet_hard=0", "method.terms.dmrnet_kl=0"]
    aux = ["method.terms.dmrnet_aux=0.4", "method.dmrnet.aux_after=1"]
    config = build_config(demo_config_path(), [*TINY, f"out={tmp_path}", *off, *aux])
    trainer = Trainer(config)
    model, settings = trainer.model, config.method.dmrnet
    assert model.reg_head is not None and trainer.mining is None  # no Ω: fixed rows
    gen = torch.Generator().manual_seed(0)
    shapes = trainer.data.input_shapes
    inputs = {n: torch.randn(7, *shapes[n], generator=gen) for n in ["fou", "kar", "mor"]}
    labels = torch.arange(7) % 10
    model.eval()  # the demo head's dropout off: one value to compare
    out = model.fuse(model.encode(inputs), MASKS, extras=True)
    step = Step(model, trainer.task, config.method, inputs, labels, MASKS, out, epoch=1)
    assert aux_term(step, settings) is None  # epoch 1: not yet
    step.epoch = 2
    rows = [i for i, mask in enumerate(MASKS.tolist()) if sum(mask) < 3]
    assert len(rows) == 6
    _, logits = model.reg_head(out.fused[rows])
    expected = F.cross_entropy(logits, labels[rows])  # unweighted: the loop multiplies by 0.4
    assert torch.allclose(aux_term(step, settings), expected)


# -- the terms' weights: method.terms ----------------------------------------------------


def objective_terms(tmp_path, overrides):
    """One batch of the 7 combinations through a dmrnet run's Objective at epoch 1 (the
    network in eval mode: z = μ, one value to compare); its logged terms, the KL by hand."""
    config = build_config(demo_config_path(), [*TINY, f"out={tmp_path}", *overrides])
    trainer = Trainer(config)
    gen = torch.Generator().manual_seed(0)
    shapes = trainer.data.input_shapes
    inputs = {n: torch.randn(7, *shapes[n], generator=gen) for n in ["fou", "kar", "mor"]}
    model = trainer.model
    model.eval()
    _, terms, _ = trainer.objective(inputs, torch.arange(7) % 10, MASKS, epoch=1)
    with torch.no_grad():
        out = model.fuse(model.encode(inputs), MASKS, extras=True)
    return trainer, {k: float(v) for k, v in terms.items()}, float(kl_divergence(out.embedding))


@pytest.mark.parametrize("weight", [0.001, 0.002])
def test_the_kl_terms_weight_is_method_terms_applied_once(tmp_path, weight):
    trainer, terms, kl = objective_terms(tmp_path, [f"method.terms.dmrnet_kl={weight}"])
    assert trainer.objective.weights["dmrnet_kl"] == weight
    assert terms["loss_dmrnet_kl"] == pytest.approx(kl, rel=1e-5)  # logged unweighted
    assert "loss_dmrnet_hard" not in terms  # hard_after = 5
    # the loss: the task loss + weight x the KL, nothing else
    assert terms["loss"] - terms["loss_task"] == pytest.approx(weight * kl, rel=1e-4)


def test_doubling_method_terms_dmrnet_kl_doubles_its_contribution(tmp_path):
    _, once, kl = objective_terms(tmp_path / "a", ["method.terms.dmrnet_kl=0.001"])
    _, twice, kl2 = objective_terms(tmp_path / "b", ["method.terms.dmrnet_kl=0.002"])
    assert kl == pytest.approx(kl2) and once["loss_dmrnet_kl"] == pytest.approx(kl, rel=1e-5)
    assert twice["loss_dmrnet_kl"] == pytest.approx(once["loss_dmrnet_kl"], rel=1e-6)
    contribution = once["loss"] - once["loss_task"]  # 0.001 x KL, from the logged terms
    assert contribution == pytest.approx(0.001 * once["loss_dmrnet_kl"], rel=1e-4)
    assert twice["loss"] - twice["loss_task"] == pytest.approx(2 * contribution, rel=1e-4)


def test_a_term_of_weight_0_is_not_computed(tmp_path):
    """method.terms merges across config layers: weight 0 is how a layer turns a preset's
    term off. The auxiliary term at 0: no decoder built, the term neither computed nor
    logged (computing it would need the decoder that is not there)."""
    aux = ["method.terms.dmrnet_aux=0", "method.dmrnet.aux_after=0", "method.terms.dmrnet_kl=0"]
    trainer, terms, _ = objective_terms(tmp_path, aux)
    assert trainer.model.reg_head is None and not needs_reg_head(trainer.objective.method)
    assert set(terms) == {"loss", "loss_task"}
    assert terms["loss"] == pytest.approx(terms["loss_task"], rel=1e-6)
    # > 0: the decoder is built (the declaration needs_reg_head) and the term is logged
    on = ["method.terms.dmrnet_aux=0.5", "method.dmrnet.aux_after=0"]
    trainer, terms, _ = objective_terms(tmp_path / "on", on)
    assert trainer.model.reg_head is not None and "loss_dmrnet_aux" in terms
    assert LOSS_TERMS.declared("dmrnet_aux", "needs_reg_head") is True
    assert not hasattr(LOSS_TERMS.get("dmrnet_aux"), "reg_head")


def test_a_mined_hard_set_needs_mars_warmup_shorter_than_training():
    short = [
        "method.name=dmrnet",
        "optim.epochs=3",
        "optim.warmup_epochs=1",
        "optim.milestones=[2]",
    ]
    message = (
        r"^method\.mar\.warmup_epochs \(3\) must be shorter than optim\.epochs \(3\) "
        r"\(method\.terms\.dmrnet_hard reads the Ω MAR mines after it\)$"
    )
    with pytest.raises(ConfigError, match=message) as caught:
        build_config(overrides=[*short, "method.mar.warmup_epochs=3"])
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"^method\.mar\.warmup_epochs must be >= 1 \(method"):
        build_config(overrides=[*short, "method.mar.warmup_epochs=0"])
    # no mined Ω: a fixed hard set, or no hard term, leaves MAR's warm-up unread
    build_config(overrides=[*short, "method.mar.warmup_epochs=3", "method.dmrnet.hard_set=[a]"])
    build_config(overrides=[*short, "method.mar.warmup_epochs=3", "method.terms.dmrnet_hard=0"])


def test_a_mined_hard_set_records_mars_settings():
    mined = to_dict(build_config(overrides=["method.name=dmrnet"]))["method"]
    assert mined["mar"]["warmup_epochs"] == build_config().method.mar.warmup_epochs
    fixed = ["method.name=dmrnet", "method.dmrnet.hard_set=[a]"]
    assert "mar" not in to_dict(build_config(overrides=fixed))["method"]
    off = ["method.name=dmrnet", "method.terms.dmrnet_hard=0"]
    assert "mar" not in to_dict(build_config(overrides=off))["method"]


# -- training and evaluating method.name=dmrnet ------------------------------------------


@pytest.fixture(scope="module")
def dmrnet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dmrnet") / "run"
    config = build_config(demo_config_path(), [*TINY, f"out={out}", "method.dmrnet.hard_after=2"])
    trainer = Trainer(config)
    assert trainer.model.reg_head is None and trainer.mining is not None  # Ω without MAR's head
    trainer.fit()
    return out


def test_dmrnet_trains_and_is_evaluated_on_every_combination(dmrnet_run, mfeat):
    log = [json.loads(line) for line in (dmrnet_run / "log.jsonl").read_text().splitlines()]
    epochs = [row for row in log if "loss_task" in row]
    assert all("loss_dmrnet_kl" in row for row in epochs)
    assert ["loss_dmrnet_hard" in row for row in epochs] == [False, False, True]
    miner = json.loads((dmrnet_run / "miner.json").read_text())
    assert len(miner["omega"]) == 3  # m = 3: the weak pair and its two singletons
    results = json.loads((dmrnet_run / "results_test.json").read_text())
    assert len(results["combinations"]) == 7
    config = build_config(demo_config_path(), TINY)
    assert config.method.dmrnet == DMRNetSettings()
    # the run's config.yaml records MAR's settings: its miner gives the mined hard set
    recorded = yaml.safe_load((dmrnet_run / "config.yaml").read_text())["method"]
    assert recorded["mar"]["warmup_epochs"] == 1
    assert recorded["terms"] == {"dmrnet_kl": 1e-3, "dmrnet_hard": 0.3}
    # the shipped network: the probabilistic head, deterministic, no regularization head
    network, _ = load_network(dmrnet_run)
    assert isinstance(network.head, ProbabilisticHead) and network.reg_head is None
    batch = {name: torch.randn(5, *mfeat.input_shapes[name]) for name in ["fou", "kar", "mor"]}
    first, second = network(batch), network(batch)
    assert torch.equal(first.logits, second.logits)


def test_dmrnet_exports_to_onnx(dmrnet_run, tmp_path):
    from mmanet.export import export_onnx

    sidecar = export_onnx(dmrnet_run, tmp_path / "model.onnx")
    assert max(sidecar["max_abs_difference"].values()) < 1e-3


# -- the paper configs -------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["casia_surf", "cefa", "nyuv2"])
def test_the_paper_configs_build_dmrnet(dataset):
    config = build_config(CONFIGS / dataset / "dmrnet.yaml", ["model.pretrained=null"])
    assert config.method.name == "dmrnet"
    settings, terms = config.method.dmrnet, config.method.terms
    assert terms["dmrnet_kl"] == 1e-3
    if dataset == "nyuv2":
        # the auxiliary decoder: the regularization head on the samples missing a modality
        assert (terms["dmrnet_aux"], settings.aux_after, settings.kl_after) == (0.5, 11, 11)
        assert terms["dmrnet_hard"] == 0 and needs_reg_head(config.method)
        assert omega_source(config.method) == "none"
        modalities, shapes = ["rgb", "depth"], {"rgb": (3, 480, 640), "depth": (1, 480, 640)}
    else:
        assert settings.hard_after == 6 and not needs_reg_head(config.method)
        assert len(settings.hard_set) == 3 and terms["dmrnet_hard"] == 0.3
        assert "dmrnet_aux" not in terms and omega_source(config.method) == "none"
        modalities = ["rgb", "depth", "ir"]
        shapes = {name: (3, 112, 112) for name in modalities}
    reg_head = needs_reg_head(config.method)
    with torch.device("meta"):
        network = build_model(config.model, modalities, shapes, 2, reg_head)
        network = method_network(network, config.method)
    assert isinstance(network.head, ProbabilisticHead)
    assert isinstance(network.head.embedding.mu[0], nn.Conv2d)

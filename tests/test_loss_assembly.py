"""The loss of one training step, assembled from its parts and checked by hand.

Paper Eq. 1: ``L = L_task + α·L_MAD + β·L_MAR``, plus the fusion baselines' auxiliary
terms (``method.aux_weight``). The formula tests (``test_mad.py``, ``test_mar.py``) pin
each term alone; these pin how a real optimisation step joins them, for every method
preset: with α ≠ β ≠ the auxiliary weight, L_MAR only over the samples whose mask is in
Ω and only through the regularization head, SP's weights uniform and MAD's not, the mined
split the configured one, ESANet's RGB stream fed the fused map, and segmentation's side
outputs and class weights where docs/method.md puts them.

Every expected value is computed here from the network's modules (encoders, fusion,
heads, the frozen teacher) with the formulas written out in this file.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import fast_overrides
from mmanet.config import build_config
from mmanet.data import build_data, collate
from mmanet.engine import Trainer
from mmanet.experiment import demo_config_path
from mmanet.modality import all_masks, drop_one_masks, full_mask, singleton_masks, sub_masks
from mmanet.models import NetworkOutput

ALPHA, BETA, AUX = 3.0, 0.25, 0.7  # all different, so a swapped weight changes the total
MODALITIES = ["fou", "kar", "mor"]
# The batch: 14 training samples, each of the 7 combinations twice (rows i and i + 7).
MASKS = torch.tensor(all_masks(3) * 2, dtype=torch.float32)
OMEGA = sub_masks((1, 1, 0))  # "mor" strong: Ω = fou, kar, fou+kar


# -- the step under test -----------------------------------------------------------------


class FixedMasks:
    """A mask sampler that hands out the given masks (in place of modality dropout)."""

    def __init__(self, masks: torch.Tensor) -> None:
        self.masks = masks

    def sample(self, batch_size: int, generator: torch.Generator, available=None) -> torch.Tensor:
        assert batch_size == len(self.masks) and available is None
        return self.masks.clone()


def train_step(trainer: Trainer, inputs, labels, masks=MASKS, omega=None) -> dict[str, float]:
    """One real optimisation step on (inputs, labels) with the given per-sample masks and
    Ω; returns its loss terms as floats."""
    trainer.step.sampler = FixedMasks(masks)
    if omega is not None:
        trainer.mining.regularizer.omega = list(omega)
    lookup = trainer.mining.omega_lookup() if trainer.mining is not None else None
    terms, *_ = trainer.step(dict(inputs), labels.clone(), lookup)
    return {key: float(value) for key, value in terms.items()}


def teacher_of(trainer: Trainer):
    """The run's frozen teacher: ``teacher(inputs) -> NetworkOutput`` on complete inputs."""
    return trainer.objective.teacher


# -- formulas written out ----------------------------------------------------------------


def cosine_relations(features: torch.Tensor) -> torch.Tensor:
    unit = features / features.norm(dim=1, keepdim=True)
    return unit @ unit.T


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy of softmax(logits); dense logits: the mean over pixels."""
    p = logits.double().softmax(dim=1)
    per_item = -(p * p.log()).sum(dim=1)
    return per_item.reshape(len(per_item), -1).mean(dim=1)


def hand_mad(student, teacher, teacher_logits, weighting: str) -> float:
    """Eqs. 2-8: Σ_i w(i) Σ_j (r_t(i,j) − r_d(i,j))², cosine relations."""
    b = student.shape[0]
    gap = (
        (
            cosine_relations(teacher.reshape(b, -1).double())
            - cosine_relations(student.reshape(b, -1).double())
        )
        ** 2
    ).sum(dim=1)
    uncertainty = entropy(teacher_logits)
    weights = {
        "softmax": torch.exp(uncertainty) / torch.exp(uncertainty).sum(),
        "uniform": torch.full((b,), 1.0 / b, dtype=torch.float64),
    }[weighting]
    return float((weights * gap).sum().detach())


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    log_p = logits.detach().double().log_softmax(dim=1)
    return float(-log_p[torch.arange(len(labels)), labels].mean())


def pixel_cross_entropy(logits, labels, class_weights, ignore: int = 255) -> float:
    """Σ_p w_{y_p} (−log p_{y_p}) / Σ_p w_{y_p} over the labelled pixels."""
    log_p = logits.double().log_softmax(dim=1)
    valid = labels != ignore
    safe = torch.where(valid, labels, 0)
    picked = log_p.gather(1, safe[:, None])[:, 0]
    weight = class_weights.double()[safe] * valid
    return float(-(weight * picked).sum() / weight.sum())


def nearest_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour downsampling by an integer factor: every factor-th row / column."""
    rows = torch.arange(size[0]) * labels.shape[1] // size[0]
    cols = torch.arange(size[1]) * labels.shape[2] // size[1]
    return labels[:, rows][:, :, cols]


def omega_rows(masks: torch.Tensor, omega) -> torch.Tensor:
    return torch.tensor([i for i, mask in enumerate(masks.tolist()) if tuple(mask) in omega])


# -- classification (the bundled data, three views) ---------------------------------------


@pytest.fixture(scope="module")
def data():
    return build_data(build_config(demo_config_path(), ["data.modalities=[fou,kar,mor]"]).data)


@pytest.fixture(scope="module")
def batch(data):
    return collate([data.train[i] for i in range(len(MASKS))])


def make_trainer(out, data, method: str, teacher=None, **extra) -> Trainer:
    settings = {
        "data.modalities": "[fou,kar,mor]",
        "method.name": method,
        "method.alpha": ALPHA,
        "method.beta": BETA,
        "method.aux_weight": AUX,
        "model.head_dropout": 0.0,
        "optim.warmup_epochs": 0,
        **extra,
    }
    if teacher is not None:
        settings["method.teacher"] = str(teacher)
    trainer = Trainer(build_config(demo_config_path(), fast_overrides(out, **settings)), data)
    if teacher_of(trainer) is not None:
        teacher_of(trainer).network = TemperedTeacher(teacher_of(trainer).network)
    return trainer


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("teacher")
    make_trainer(out, data, "teacher", **{"optim.epochs": 2}).fit()
    return out


class TemperedTeacher(nn.Module):
    """The trained teacher with its logits scaled per sample from 1 down to 0.

    The trained teacher is all but certain on training samples (entropies 0.01-0.05, so
    Eq. 8's softmax(π) is uniform to 1e-5 and MAD equals SP); scaled logits spread the
    entropies over [0, ln k], so MAD's weights and SP's tell apart.
    """

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, inputs, mask=None) -> NetworkOutput:
        out = self.teacher(inputs, mask)
        scales = torch.linspace(1.0, 0.0, len(out.logits))
        return NetworkOutput(out.fused, out.features, out.logits * scales[:, None])


def deployment(model, inputs, masks, head: str = "head"):
    """Encoders -> × mask -> concatenation -> head, written out: (fused, features, logits)."""
    features = [
        model.encoders[name](inputs[name]) * masks[:, i : i + 1]
        for i, name in enumerate(MODALITIES)
    ]
    fused = torch.cat(features, dim=1)
    return (fused, *getattr(model, head)(fused))


@pytest.mark.parametrize("method", ["teacher", "sf_md"])
def test_without_extra_terms_the_loss_is_the_task_loss_under_the_step_masks(
    tmp_path, data, batch, method
):
    inputs, labels = batch
    trainer = make_trainer(tmp_path, data, method)
    masks = torch.ones_like(MASKS) if method == "teacher" else MASKS
    _, _, logits = deployment(trainer.model, inputs, masks)
    expected = cross_entropy(logits, labels)
    terms = train_step(trainer, inputs, labels)
    assert set(terms) >= {"loss", "loss_task"} and "loss_distill" not in terms
    assert terms["loss_task"] == pytest.approx(expected, rel=1e-5)
    assert terms["loss"] == pytest.approx(expected, rel=1e-5)


def test_customized_trains_its_one_combination(tmp_path, data, batch):
    inputs, labels = batch
    trainer = make_trainer(tmp_path, data, "customized", **{"method.combination": "fou+mor"})
    fixed = torch.tensor([[1.0, 0.0, 1.0]]).expand(len(labels), -1)
    _, _, logits = deployment(trainer.model, inputs, fixed)
    terms = train_step(trainer, inputs, labels)
    assert terms["loss"] == pytest.approx(cross_entropy(logits, labels), rel=1e-5)


@pytest.mark.parametrize(
    ("method", "features", "weighting"),
    [
        ("sf_md_sp", "fused", "uniform"),
        ("sf_mad", "fused", "softmax"),
        ("sf_mad", "head", "softmax"),
    ],
)
def test_distillation_total_is_task_plus_alpha_times_mad(
    tmp_path, data, batch, teacher_dir, method, features, weighting
):
    inputs, labels = batch
    trainer = make_trainer(
        tmp_path, data, method, teacher_dir, **{"method.distill_features": features}
    )
    fused, representation, logits = deployment(trainer.model, inputs, MASKS)
    with torch.no_grad():
        teacher = teacher_of(trainer)(inputs)  # the complete inputs, no mask
    student = fused if features == "fused" else representation
    teacher_map = teacher.fused if features == "fused" else teacher.features
    task = cross_entropy(logits, labels)
    mad = hand_mad(student, teacher_map, teacher.logits, weighting)
    other = hand_mad(
        student, teacher_map, teacher.logits, {"uniform": "softmax"}.get(weighting, "uniform")
    )
    assert abs(mad - other) > 1e-3 * mad  # the teacher's entropies differ: SP ≠ MAD here
    terms = train_step(trainer, inputs, labels)
    assert terms["loss_task"] == pytest.approx(task, rel=1e-5)
    assert terms["loss_distill"] == pytest.approx(mad, rel=1e-5)
    assert terms["loss"] == pytest.approx(task + ALPHA * mad, rel=1e-5)


@pytest.mark.parametrize(("method", "omega"), [("mmanet", OMEGA), ("sf_mad_sr", None)])
def test_regularization_is_the_reg_heads_loss_on_the_omega_rows_times_beta(
    tmp_path, data, batch, teacher_dir, method, omega
):
    inputs, labels = batch
    trainer = make_trainer(
        tmp_path, data, method, teacher_dir, **{"method.distill_features": "fused"}
    )
    expected_omega = omega if omega is not None else singleton_masks(3)
    rows = omega_rows(MASKS, expected_omega)
    assert 1 < len(rows) < len(MASKS)
    fused, _, logits = deployment(trainer.model, inputs, MASKS)
    with torch.no_grad():
        teacher = teacher_of(trainer)(inputs)
    _, reg_logits = trainer.model.reg_head(fused[rows])
    _, deployment_logits = trainer.model.head(fused[rows])
    task = cross_entropy(logits, labels)
    mad = hand_mad(fused, teacher.fused, teacher.logits, "softmax")
    mar = cross_entropy(reg_logits, labels[rows])
    assert abs(mar - cross_entropy(deployment_logits, labels[rows])) > 1e-3  # two heads
    assert abs(mar - cross_entropy(trainer.model.reg_head(fused)[1], labels)) > 1e-3
    assert abs(mad - mar) > 1e-2 * mar  # so exchanging α and β changes the total
    terms = train_step(trainer, inputs, labels, omega=omega)
    assert terms["loss_task"] == pytest.approx(task, rel=1e-5)
    assert terms["loss_distill"] == pytest.approx(mad, rel=1e-5)
    assert terms["loss_reg"] == pytest.approx(mar, rel=1e-5)
    assert terms["mar_fraction"] == pytest.approx(len(rows) / len(MASKS))
    assert terms["loss"] == pytest.approx(task + ALPHA * mad + BETA * mar, rel=1e-5)


def test_regularization_is_off_until_omega_is_mined(tmp_path, data, batch, teacher_dir):
    inputs, labels = batch
    trainer = make_trainer(tmp_path, data, "mmanet", teacher_dir)
    assert trainer.mining.omega is None
    terms = train_step(trainer, inputs, labels)
    assert "loss_reg" not in terms
    assert terms["loss"] == pytest.approx(terms["loss_task"] + ALPHA * terms["loss_distill"], 1e-5)


@pytest.mark.parametrize("fusion", ["hemis", "lcr"])
def test_fusion_baselines_without_auxiliary_terms(tmp_path, data, batch, fusion):
    inputs, labels = batch
    trainer = make_trainer(tmp_path, data, fusion)
    model = trainer.model
    features = [
        model.encoders[name](inputs[name]) * MASKS[:, i : i + 1]
        for i, name in enumerate(MODALITIES)
    ]
    _, logits = model.head(model.fusion(features, MASKS))
    terms = train_step(trainer, inputs, labels)
    assert "loss_aux" not in terms
    assert terms["loss"] == pytest.approx(cross_entropy(logits, labels), rel=1e-5)


def modality_cross_entropy(per_modality_logits, labels) -> float:
    """Σ_i of the mean cross-entropy over the samples where modality i is present."""
    total = 0.0
    for i, logits in enumerate(per_modality_logits):
        present = MASKS[:, i] > 0
        total += cross_entropy(logits[present], labels[present])
    return total


@pytest.mark.parametrize("fusion", ["rfnet", "mmformer"])
def test_fusion_baselines_add_their_auxiliary_terms_times_aux_weight(tmp_path, data, batch, fusion):
    inputs, labels = batch
    trainer = make_trainer(tmp_path, data, fusion)
    model, module = trainer.model, trainer.model.fusion
    assert module.head is not None
    features = [
        model.encoders[name](inputs[name]) * MASKS[:, i : i + 1]
        for i, name in enumerate(MODALITIES)
    ]
    _, logits = model.head(module(features, MASKS))
    present = MASKS > 0
    maps = [f[:, :, None, None] for f in features]
    if fusion == "rfnet":  # RFNet's shared-weight per-modality head: ONE 1×1 classifier
        # for every modality, on its projected features alone (absent: zeros, weight 0);
        # class labels leave the region maps unsupervised, so no region term
        assert not module.supervise_regions and module.out_channels == module.project.width
        streams = module.project(maps, present)
    else:  # mmFormer: ONE shared decoder (conv + BN + LeakyReLU, then the 1×1 classifier)
        # on each modality's intra-modal tokens Z_i = Layer_i(F_i W_iᵀ + b_i + p_i)
        streams = []
        for i, x in enumerate(maps):
            tokens = module.tokens[i](x.flatten(2).transpose(1, 2))  # (b, 1, d): one token
            pos = module.pos[i].flatten(1).T  # modality i's learned 1 × 1 position grid
            for layer in module.intra[i].layers:
                tokens = layer(tokens + pos)
            z = tokens.transpose(1, 2).reshape(len(labels), module.width, 1, 1)
            streams.append(module.decoder(z))
    per_modality = [module.head(x).mean(dim=(2, 3)) for x in streams]
    task = cross_entropy(logits, labels)
    aux = modality_cross_entropy(per_modality, labels)
    terms = train_step(trainer, inputs, labels)
    assert terms["loss_aux"] == pytest.approx(aux, rel=1e-5)
    assert terms["loss"] == pytest.approx(task + AUX * aux, rel=1e-5)


@pytest.mark.parametrize("split", ["train", "val"])
def test_mining_reads_the_configured_split(tmp_path, data, teacher_dir, split):
    """Eqs. 9-12: g(i) = KL(P_0 ‖ P_i) of the smoothed predicted-label histograms of the
    mining split, with the full mask and with modality i dropped."""
    trainer = make_trainer(
        tmp_path, data, "mmanet", teacher_dir, **{"method.mar.mining_split": split}
    )
    model = trainer.model

    def g_on(dataset) -> torch.Tensor:
        inputs, _ = collate([dataset[i] for i in range(len(dataset))])
        histograms = []
        model.eval()
        with torch.no_grad():
            for mask in [full_mask(3), *drop_one_masks(3)]:
                masks = torch.tensor([mask], dtype=torch.float32).expand(len(dataset), -1)
                predictions = deployment(model, inputs, masks)[2].argmax(dim=1)
                counts = torch.bincount(predictions, minlength=10).double() + 1
                histograms.append(counts / counts.sum())
        model.train()
        full = histograms[0]
        return torch.stack([(full * (full / p).log()).sum() for p in histograms[1:]]).float()

    expected, other = (g_on(data.train), g_on(data.val))[:: 1 if split == "train" else -1]
    assert not torch.allclose(expected, other, rtol=1e-3)  # the splits tell apart
    trainer.mine(1)
    bank = trainer.mining.regularizer.memory_bank
    torch.testing.assert_close(bank[0], expected, rtol=1e-4, atol=1e-6)


# -- segmentation (a tiny ESANet on the NYUv2 fixture) ------------------------------------


@pytest.fixture(scope="module")
def nyuv2(tmp_path_factory):
    from mmanet.data.nyuv2 import load_nyuv2
    from mmanet.data.seg_fixtures import write_nyuv2

    root = write_nyuv2(tmp_path_factory.mktemp("nyuv2"), n_train=8, n_test=4, size=(32, 32))
    return load_nyuv2(root, size=(32, 32), augment=False)


def seg_trainer(out, nyuv2, method: str, teacher=None) -> Trainer:
    overrides = {
        "out": str(out),
        "model": {
            "name": "esanet",
            "esanet": {
                "encoder": "resnet18",
                "block": "basic",
                "width": 8,
                "decoder_channels": [16, 8, 8],
                "decoder_blocks": 1,
                "context_bins": [1],
            },
        },
        "data": {"class_weighting": "median_frequency", "batch_size": 4},
        "method": {
            "name": method,
            "alpha": ALPHA,
            "beta": BETA,
            "teacher": None if teacher is None else str(teacher),
            "mar": {"warmup_epochs": 1},
        },
        "optim": {"epochs": 2, "warmup_epochs": 0, "milestones": [1]},
        "progress": False,
        "tensorboard": False,
    }
    return Trainer(build_config(overrides=overrides), nyuv2)


SEG_MASKS = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
SEG_OMEGA = [(1, 0)]  # depth strong: Ω = rgb alone


def decoder_loss(logits, sides, labels, weights) -> float:
    """The pixel loss of the logits plus one per side output, at the side's resolution."""
    total = pixel_cross_entropy(logits, labels, weights)
    for side in sides:
        total += pixel_cross_entropy(side, nearest_labels(labels, side.shape[-2:]), weights)
    return total


def test_segmentation_loss_sums_side_outputs_with_class_weights_and_reg_decoder(tmp_path, nyuv2):
    from mmanet.data.rgbd import median_frequency_weights

    teacher_dir = tmp_path / "teacher"
    seg_trainer(teacher_dir, nyuv2, "teacher").save()
    trainer = seg_trainer(tmp_path / "mmanet", nyuv2, "mmanet", teacher_dir)
    weights = median_frequency_weights(nyuv2.train_eval, 40)
    inputs, labels = collate([nyuv2.train[i] for i in range(4)])
    model = trainer.model
    out = model.fuse(model.encode(inputs), SEG_MASKS, extras=True)
    sides = out.side_logits
    assert len(sides) == 3 and sides[0].shape[-1] < sides[-1].shape[-1] < labels.shape[-1]
    rows = omega_rows(SEG_MASKS, SEG_OMEGA)
    reg = model.apply_head(out.fused.select(rows), "reg_head", extras=True)
    reg_sides = reg.side_logits
    with torch.no_grad():
        teacher = teacher_of(trainer)(inputs)
    task = decoder_loss(out.logits, sides, labels, weights)
    unweighted = decoder_loss(out.logits, sides, labels, torch.ones_like(weights))
    assert abs(task - unweighted) > 1e-3 * task  # the class weights matter here
    mar = decoder_loss(reg.logits, reg_sides, labels[rows], weights)
    mad = hand_mad(out.fused.map, teacher.fused.map, teacher.logits, "softmax")  # fused map
    terms = train_step(trainer, inputs, labels, SEG_MASKS, SEG_OMEGA)
    assert terms["loss_task"] == pytest.approx(task, rel=1e-4)
    assert terms["loss_distill"] == pytest.approx(mad, rel=1e-4)
    assert terms["loss_reg"] == pytest.approx(mar, rel=1e-4)
    assert terms["loss"] == pytest.approx(task + ALPHA * mad + BETA * mar, rel=1e-4)


def test_esanet_rgb_stream_reads_the_fused_map_at_every_stage(tmp_path, nyuv2):
    """ESANet: after the stem and each of the four stages, SE-add fuses depth into the RGB
    stream, and the next RGB stage reads that fused map (the depth stream its own)."""
    model = seg_trainer(tmp_path, nyuv2, "sf_md").model.eval()
    encoder = model.fusion
    fused_out, rgb_in, depth_in, depth_out = [], [], [], []

    def record(store: list, take_input: bool):
        def hook(module, args, output) -> None:
            store.append(args[0] if take_input else output)

        return hook

    modules = [
        *((fusion, fused_out, False) for fusion in encoder.fusions),
        *((stage, rgb_in, True) for stage in encoder.rgb_encoder.stages()),
        (encoder.depth_encoder.maxpool, depth_out, False),
        *((stage, depth_in, True) for stage in encoder.depth_encoder.stages()),
        *((stage, depth_out, False) for stage in encoder.depth_encoder.stages()),
    ]
    hooks = [module.register_forward_hook(record(store, first)) for module, store, first in modules]
    inputs, _ = collate([nyuv2.train[i] for i in range(2)])
    with torch.no_grad():
        model(inputs, torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    for hook in hooks:
        hook.remove()
    assert len(fused_out) == 5 and len(rgb_in) == 4
    torch.testing.assert_close(rgb_in[0], encoder.rgb_encoder.maxpool(fused_out[0]))
    for stage in range(1, 4):
        torch.testing.assert_close(rgb_in[stage], fused_out[stage])
    for stage in range(4):  # the depth stream continues on its own maps
        torch.testing.assert_close(depth_in[stage], depth_out[stage])
    assert not torch.allclose(fused_out[1], depth_out[1])
    assert math.isfinite(float(fused_out[-1].sum()))

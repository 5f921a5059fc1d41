"""The training engine: every method through one loop, exact resume, logs and checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import fast_overrides
from mmanet.config import ConfigError, build_config
from mmanet.engine import Trainer
from mmanet.engine.checkpoint import list_checkpoints, load_training_state
from mmanet.experiment import demo_config_path


def config(out, **extra):
    return build_config(demo_config_path(), fast_overrides(out, **extra))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, mfeat):
    out = tmp_path_factory.mktemp("teacher")
    Trainer(config(out, **{"method.name": "teacher"}), mfeat).fit()
    return out


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, mfeat, teacher_dir):
    extra = {"method.name": "mmanet", "method.teacher": str(teacher_dir)}
    straight = Trainer(config(tmp_path / "straight", **extra), mfeat)
    straight_report = straight.fit()

    first = Trainer(config(tmp_path / "resumed", **extra), mfeat)
    assert first.fit(stop_after=2) is None  # "killed" after epoch 2, mid-way through MAR
    del first
    # Scramble the global RNG as a new process would have it.
    torch.manual_seed(12345)
    resumed = Trainer(config(tmp_path / "resumed", **extra), mfeat)
    resumed_report = resumed.fit(resume=True)

    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed_report["combinations"] == straight_report["combinations"]
    assert resumed.mining.omega == straight.mining.omega
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").open()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("method", "terms"),
    [
        ("teacher", {"loss_task"}),
        ("sf_md", {"loss_task"}),
        ("sf_md_sp", {"loss_task", "loss_distill"}),
        ("sf_mad", {"loss_task", "loss_distill"}),
        ("sf_mad_sr", {"loss_task", "loss_distill", "loss_reg"}),
        ("mmanet", {"loss_task", "loss_distill", "loss_reg"}),
    ],
)
def test_each_method_logs_its_loss_terms(tmp_path, mfeat, teacher_dir, method, terms):
    extra = {"method.name": method, "optim.epochs": 3}
    if method not in ("teacher", "sf_md"):  # the methods that read a teacher
        extra["method.teacher"] = str(teacher_dir)
    report = Trainer(config(tmp_path, **extra), mfeat).fit()
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").open()]
    last = rows[-1]
    assert {k for k in last if k.startswith("loss_")} == terms
    assert len(report["combinations"]) == 63
    assert 0 <= report["average"]["error"] <= 100
    assert (tmp_path / "log.csv").is_file()
    assert (tmp_path / "results_test.json").is_file()
    train_acc = [k for k in last if k.startswith("train_acc/")]
    assert train_acc == ["train_acc/fou+fac+kar+pix+zer+mor"] if method == "teacher" else train_acc
    if method == "mmanet":
        assert "mar_g/fou" in rows[0] and "omega" in rows[1]
        miner = json.loads((tmp_path / "miner.json").read_text())
        assert len(miner["memory_bank"]) == 2 and miner["omega"]


def test_checkpoints_hold_everything_to_resume(tmp_path, mfeat):
    Trainer(config(tmp_path, **{"method.name": "sf_md"}), mfeat).fit()
    found = list_checkpoints(tmp_path)
    assert [p.name for p in found] == ["epoch-0003", "epoch-0004"]  # the newest two are kept
    state = load_training_state(found[-1])
    assert state["epoch"] == 4
    assert set(state["rng"]) >= {"torch", "mask", "data", "python", "numpy"}
    meta = json.loads((found[-1] / "meta.json").read_text())
    assert meta["modalities"] == ["fou", "fac", "kar", "pix", "zer", "mor"]
    assert meta["class_names"] == [str(c) for c in range(10)]


def test_distillation_without_teacher_is_a_config_error(tmp_path, mfeat):
    with pytest.raises(ConfigError, match=r"method\.teacher"):
        Trainer(config(tmp_path, **{"method.name": "mmanet"}), mfeat)


def test_warmup_schedule_and_step_decay(tmp_path, mfeat):
    trainer = Trainer(
        config(
            tmp_path,
            **{
                "method.name": "sf_md",
                "optim.epochs": 4,
                "optim.warmup_epochs": 2,
                "optim.milestones": "[3]",
            },
        ),
        mfeat,
    )
    steps = len(trainer.train_loader)
    base = trainer.cfg.optim.lr
    lrs = []
    optimizer, scheduler = trainer.step.optimizer, trainer.step.scheduler
    for _ in range(4 * steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(base / (2 * steps))  # linear warm-up from lr / warm-up steps
    assert lrs[2 * steps - 1] == pytest.approx(base)
    assert lrs[2 * steps] == pytest.approx(base)  # epoch 3 at the base rate
    assert lrs[3 * steps] == pytest.approx(base * 0.1)  # after 3 epochs: × gamma


def test_customized_trains_one_model_per_combination_on_its_own_mask(tmp_path, mfeat):
    from mmanet.data import build_data
    from mmanet.experiment import run_customized

    data = build_data(build_config(demo_config_path(), ["data.modalities=[fou,pix]"]).data)
    overrides = {
        "data": {"modalities": ["fou", "pix"]},
        "optim": {"epochs": 2, "warmup_epochs": 1, "milestones": [1]},
        "progress": False,
        "tensorboard": False,
    }
    report = run_customized(0, tmp_path, demo_config_path(), overrides, data)
    assert list(report["combinations"]) == ["fou", "pix", "fou+pix"]
    for name in ("fou", "pix", "fou+pix"):
        own = json.loads(
            (tmp_path / "seed-0" / "customized" / name / "results_test.json").read_text()
        )
        assert own["trained_on"] == name
        assert report["combinations"][name] == own["combinations"][name]
        rows = [
            json.loads(line)
            for line in (tmp_path / "seed-0" / "customized" / name / "log.jsonl").open()
        ]
        assert [k for k in rows[-1] if k.startswith("train_acc/")] == [f"train_acc/{name}"]
    assert report["average"]["error"] == pytest.approx(
        sum(report["combinations"][n]["error"] for n in ("fou", "pix", "fou+pix")) / 3
    )


def test_cached_teacher_outputs_replace_the_per_step_teacher_forward(tmp_path, mfeat):
    teacher_dir = tmp_path / "teacher"
    teacher_cfg = fast_overrides(teacher_dir, **{"method.name": "teacher", "optim.epochs": 2})
    Trainer(build_config(demo_config_path(), teacher_cfg), mfeat).fit()
    logs = {}
    for cache in (False, True):
        extra = {
            "method.name": "sf_mad",
            "method.teacher": str(teacher_dir),
            "method.cache_teacher": cache,
            "optim.epochs": 2,
        }
        trainer = Trainer(
            build_config(demo_config_path(), fast_overrides(tmp_path / str(cache), **extra)), mfeat
        )
        calls: list[int] = []
        teacher = trainer.objective.teacher
        teacher.network.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        trainer.fit()
        logs[cache] = [row["loss_distill"] for row in trainer.logger.rows]
        steps = 2 * len(trainer.train_loader)
        passes = -(-len(mfeat.train) // trainer.cfg.data.eval_batch_size)  # one split pass
        assert len(calls) == (passes if cache else steps)
    assert logs[True] == pytest.approx(logs[False], rel=1e-2)  # rounding of other batch sizes
    inputs, _ = next(iter(trainer.train_loader))  # the cached trainer: indices in the batch
    index = inputs.pop("__index__")
    cached = teacher(inputs, index)
    direct = teacher(inputs)
    for name in ("fused", "features", "logits"):
        torch.testing.assert_close(getattr(cached, name), getattr(direct, name))


def test_teacher_cache_without_a_teacher_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a distilling method"):
        Trainer(build_config(demo_config_path(), ["method.cache_teacher=true"]))

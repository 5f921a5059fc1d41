"""Configuration: YAML + key=value overrides, presets and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmanet.config import Config, ConfigError, build_config, parse_overrides
from mmanet.registry import METHODS


def write(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


YAML = """\
seed: 3
optim:
  lr: 0.01
  epochs: 20
  milestones: [10, 15]
method:
  alpha: 4.0
"""


# ---------------------------------------------------------------- layering


def test_defaults():
    config = build_config()
    assert isinstance(config, Config)
    assert config.method.name == "sf_md"
    assert config.method.distill == "none"
    assert config.method.regularize == "none"
    assert config.optim.lr == pytest.approx(1e-3)
    assert config.optim.epochs == 100


def test_yaml_file_and_overrides_precedence(tmp_path):
    path = write(tmp_path, YAML)
    config = build_config(path, ["optim.lr=0.5", "seed=9"])
    assert config.optim.lr == pytest.approx(0.5)  # override beats the file
    assert config.seed == 9
    assert config.optim.epochs == 20  # from the file
    assert config.optim.milestones == [10, 15]
    assert config.method.alpha == pytest.approx(4.0)
    assert config.optim.momentum == pytest.approx(0.9)  # default


def test_yaml_file_alone(tmp_path):
    config = build_config(write(tmp_path, YAML))
    assert config.seed == 3
    assert config.optim.lr == pytest.approx(0.01)


def test_empty_yaml_file_gives_defaults(tmp_path):
    assert build_config(write(tmp_path, "")) == build_config()


def test_overrides_as_mapping():
    config = build_config(overrides={"optim": {"epochs": 12}, "method": {"beta": 0.25}})
    assert config.optim.epochs == 12
    assert config.method.beta == pytest.approx(0.25)


def test_base_is_below_the_file(tmp_path):
    base = {"seed": 1, "optim": {"epochs": 50, "lr": 0.2}}
    config = build_config(write(tmp_path, YAML), base=base)
    assert config.seed == 3
    assert config.optim.lr == pytest.approx(0.01)
    assert config.optim.epochs == 20


def test_overrides_parse_yaml_values():
    parsed = parse_overrides(["optim.milestones=[3, 6]", "method.teacher=runs/t", "progress=false"])
    assert parsed == {
        "optim": {"milestones": [3, 6]},
        "method": {"teacher": "runs/t"},
        "progress": False,
    }


@pytest.mark.parametrize("item", ["optim.lr", "=3"])
def test_override_without_key_value_raises(item):
    with pytest.raises(ConfigError):
        build_config(overrides=[item])


def test_nested_override_merges_with_file(tmp_path):
    path = write(tmp_path, "method:\n  name: sf_mad\n  mad: {relation: gram}\n")
    config = build_config(path, ["method.mad.weighting=linear"])
    assert config.method.mad.relation == "gram"
    assert config.method.mad.weighting == "linear"


# ---------------------------------------------------------------- method presets


def test_mmanet_preset():
    method = build_config(overrides=["method.name=mmanet"]).method
    assert method.distill == "mad"
    assert method.regularize == "mar"
    assert method.dropout is True


@pytest.mark.parametrize("name", METHODS.names())
def test_every_preset_applies(name):
    config = build_config(overrides=[f"method.name={name}"])
    preset = METHODS.get(name)
    assert (config.method.dropout, config.method.distill, config.method.regularize) == (
        preset.dropout,
        preset.distill,
        preset.regularize,
    )
    if preset.fusion is not None:
        assert (config.model.fusion, config.model.fusion_aux) == (preset.fusion, preset.fusion_aux)


def test_teacher_preset_trains_on_complete_data():
    method = build_config(overrides=["method.name=teacher"]).method
    assert method.dropout is False


def test_sp_preset():
    assert build_config(overrides=["method.name=sf_md_sp"]).method.distill == "sp"


def test_explicit_override_beats_the_preset():
    method = build_config(overrides=["method.name=mmanet", "method.regularize=sr"]).method
    assert method.distill == "mad"
    assert method.regularize == "sr"


def test_file_beats_the_preset_and_override_picks_the_preset(tmp_path):
    path = write(tmp_path, "method:\n  name: sf_md\n  distill: sp\n")
    method = build_config(path, ["method.name=mmanet"]).method
    assert method.name == "mmanet"
    assert method.distill == "sp"  # explicit in the file
    assert method.regularize == "mar"  # from the preset


# ---------------------------------------------------------------- errors


def test_unknown_key_names_the_dotted_key():
    with pytest.raises(ConfigError, match=r"method\.mad\.temprature"):
        build_config(overrides=["method.mad.temprature=2"])


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match="learning_rate"):
        build_config(write(tmp_path, "learning_rate: 0.1\n"))


def test_unknown_key_in_file_names_the_dotted_key(tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.lr_decay"):
        build_config(write(tmp_path, "optim:\n  lr_decay: 0.1\n"))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.epochs=ten", "optim.epochs"),
        ("optim.epochs=2.5", "optim.epochs"),
        ("optim.epochs=true", "optim.epochs"),  # a bool is not an int
        ("method.alpha=strong", "method.alpha"),
        ("method.dropout=1", "method.dropout"),
        ("data.batch_size=[64]", "data.batch_size"),
        ("optim.milestones=5", "optim.milestones"),
        ("method.mad=cosine", "method.mad"),
    ],
)
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config(overrides=[override])


def test_wrong_list_element_names_the_index():
    with pytest.raises(ConfigError, match=r"optim\.milestones\[1\]"):
        build_config(overrides=["optim.milestones=[10, x]"])


def test_literal_violation_names_the_key_and_choices():
    with pytest.raises(ConfigError, match=r"method\.mad\.relation") as info:
        build_config(overrides=["method.mad.relation=euclidean"])
    assert "'cosine'" in str(info.value)
    assert "'gram'" in str(info.value)
    with pytest.raises(ConfigError, match=r"method\.regularize"):
        build_config(overrides=["method.regularize=both"])


@pytest.mark.parametrize("override", ["method.alpha=-1", "method.alpha=-0.5"])
def test_negative_alpha_is_rejected(override):
    with pytest.raises(ConfigError, match=r"method\.alpha"):
        build_config(overrides=[override])


def test_negative_beta_is_rejected():
    with pytest.raises(ConfigError, match=r"method\.beta"):
        build_config(overrides=["method.beta=-0.1"])


def test_zero_alpha_is_allowed():
    assert build_config(overrides=["method.alpha=0"]).method.alpha == 0.0


@pytest.mark.parametrize("warmup", [10, 11])
def test_lr_warmup_must_be_shorter_than_training(warmup):
    with pytest.raises(ConfigError, match=r"optim\.warmup_epochs"):
        build_config(overrides=["optim.epochs=10", f"optim.warmup_epochs={warmup}"])


def test_lr_warmup_shorter_than_training_is_fine():
    config = build_config(overrides=["optim.epochs=10", "optim.warmup_epochs=9"])
    assert config.optim.warmup_epochs == 9


def test_mar_warmup_must_be_shorter_than_training():
    overrides = ["method.name=mmanet", "optim.epochs=5", "optim.warmup_epochs=0"]
    with pytest.raises(ConfigError, match=r"method\.mar\.warmup_epochs"):
        build_config(overrides=overrides)  # MAR's default warm-up is 5 epochs


def test_bad_yaml_file_names_the_file(tmp_path):
    path = write(tmp_path, "optim:\n  lr: [0.1, 0.2\n", name="broken.yaml")
    with pytest.raises(ConfigError, match=r"broken\.yaml") as info:
        build_config(path)
    assert str(path) in str(info.value)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere\.yaml"):
        build_config(tmp_path / "nowhere.yaml")


def test_non_mapping_yaml_file_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"list\.yaml"):
        build_config(write(tmp_path, "- 1\n- 2\n", name="list.yaml"))


def test_non_mapping_section_is_rejected():
    with pytest.raises(ConfigError, match="optim"):
        build_config(overrides={"optim": 3})


# ---------------------------------------------------------------- coercion


def test_int_accepted_for_float(tmp_path):
    config = build_config(write(tmp_path, "optim:\n  lr: 1\n"), ["method.alpha=3"])
    assert config.optim.lr == 1.0
    assert isinstance(config.optim.lr, float)
    assert config.method.alpha == 3.0
    assert isinstance(config.method.alpha, float)


def test_int_list_accepted_for_float_list():
    config = build_config(overrides=["method.mask_probabilities=[1, 2, 0.5]"])
    assert config.method.mask_probabilities == [1.0, 2.0, 0.5]
    assert all(isinstance(p, float) for p in config.method.mask_probabilities)


def test_optional_values_accept_null():
    config = build_config(
        overrides=["data.bona_fide_class=null", "method.name=sf_mad", "method.teacher=runs/t"]
    )
    assert config.data.bona_fide_class is None
    assert config.method.teacher == "runs/t"
    assert build_config(overrides=["data.bona_fide_class=1"]).data.bona_fide_class == 1


def test_per_modality_encoder_overrides():
    config = build_config(overrides=["model.encoders.fou.type=cnn", "model.encoders.fou.dropout=0"])
    encoder = config.model.encoders["fou"]
    assert encoder.type == "cnn"
    assert encoder.dropout == 0.0
    assert encoder.widths == [128, 64]
    with pytest.raises(ConfigError, match=r"model\.encoders\.fou\.kind"):
        build_config(overrides=["model.encoders.fou.kind=cnn"])


def test_scientific_notation_with_dot_is_a_float():
    assert build_config(overrides=["optim.lr=1.0e-3"]).optim.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("value", ["1e-3", "5e-4"])
def test_scientific_notation_without_dot_is_a_float(value):
    assert build_config(overrides=[f"optim.lr={value}"]).optim.lr == pytest.approx(float(value))


@pytest.mark.parametrize(
    "path",
    sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "configs").glob("*/*.yaml")),
)
def test_every_shipped_config_is_valid(path):
    config = build_config(path)
    if "cityscapes" in path:
        assert config.data.name == "cityscapes" and config.method.alpha == 10.0
        assert config.model.esanet.context == "ppm_adaptive"
    if "nyuv2" in path:
        assert (config.method.alpha, config.method.beta) == (4.0, 0.2)
        assert config.optim.scheduler == "onecycle" and config.data.batch_size == 8

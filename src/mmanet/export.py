"""The deployment network outside PyTorch: ONNX export verified with onnxruntime.

The exported graph takes every modality (in the checkpoint's modality order) plus a
per-sample presence mask ``mask`` (b, m) of 0/1 floats, and returns ``logits``; so one
file serves every combination — an absent modality is given as any values (zeros) with
its mask column 0. No teacher, no regularization head. Next to ``model.onnx`` a JSON
sidecar records, per input (each modality and the mask), its shape, dtype and preprocessing
(how a file becomes that input: the run's dataset's :class:`~mmanet.data.InputReader`), and
the class names, the code version and the verification: the largest absolute difference
between onnxruntime and PyTorch per combination on random inputs (an export whose
difference exceeds :data:`TOLERANCE` is an error, and nothing is written). An anti-spoofing
checkpoint's sidecar also carries its decision thresholds per combination (``thresholds``:
at the validation EER and at validation APCER = 5 % and 1 %, and which one is the default;
:func:`mmanet.deployment_thresholds.combination_thresholds`, the numbers ``mmanet predict``
decides with),
so that a deployed model decides with the threshold of the combination it receives: the
``mask`` it is given. They are set on the run's validation split; when it cannot be read
that is an error before anything is written, unless ``thresholds=False``
(``--no-thresholds``), which the sidecar records.

Only the batch dimension is free: every other dimension of the inputs and of ``logits``
is fixed at the size the checkpoint records (an image network takes images of exactly
that size; ESANet's pyramid pooling is exported with its grid fixed for that size).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmanet.data import input_reader
from mmanet.engine.network import PYTHON_BUILDER, checkpoint_config, load_network
from mmanet.errors import ExportError
from mmanet.io import atomic_write_json
from mmanet.modality import Modalities
from mmanet.models import Builder, UnifiedNetwork
from mmanet.provenance import code_version

# onnxruntime may differ from PyTorch by this much, relative to the largest |logit| (or 1)
TOLERANCE = 1e-3


class DeploymentGraph(nn.Module):
    """``forward(*modalities, mask) -> logits`` for tracing."""

    def __init__(self, model: UnifiedNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        *inputs, mask = args
        encoded = self.model.encode(dict(zip(self.model.modalities, inputs, strict=True)))
        return self.model.fuse(encoded, mask).logits


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Standard output and error discarded, at the Python and the file-descriptor level
    (the TorchScript exporter also writes from C++)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def example_inputs(
    model: UnifiedNetwork, masks: torch.Tensor, per_mask: int = 2, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random inputs for ``per_mask`` samples of each mask (c, m), then the row masks."""
    gen = torch.Generator().manual_seed(seed)
    rows = masks.repeat_interleave(per_mask, dim=0)
    inputs = [
        torch.randn(len(rows), *model.input_shapes[name], generator=gen)
        for name in model.modalities
    ]
    return (*inputs, rows)


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    opset: int = 17,
    builder: Builder | None = None,
    select: str | None = None,
    thresholds: bool = True,
) -> dict[str, Any]:
    """Write ``out`` (ONNX) and ``out`` + ``.json``; return the sidecar's content.

    ``builder``: the network's builder when it is not a registered one (a network from
    :func:`mmanet.models.from_encoders`). ``thresholds``: an anti-spoofing checkpoint's
    per-combination thresholds in the sidecar (False: recorded as not computed).
    """
    import onnxruntime

    from mmanet.deployment_thresholds import bona_fide_class, combination_thresholds

    model, meta = load_network(checkpoint, builder=builder, select=select)
    anti_spoofing = bona_fide_class(meta) is not None
    # before the export: a validation split that cannot be read is a quick, named error
    decision = combination_thresholds(model, meta) if anti_spoofing and thresholds else None
    names = model.modalities
    masks = torch.tensor(names.combinations, dtype=torch.float32)
    graph = DeploymentGraph(model).eval()
    inputs = example_inputs(model, masks)
    records = input_records(model, meta, inputs)  # before the export: a config error is quick
    what = f"{checkpoint}: {network_title(meta)}"
    out = Path(out)
    tmp = _temporary_file(out)  # before the export: an unwritable folder is quick
    try:
        _trace(graph, inputs, tmp, [*names, "mask"], opset, what)
        verification, reference = verify(graph, str(tmp), inputs, names, masks, str(checkpoint))
        worst = max(verification.items(), key=lambda item: item[1])
        scale = max(1.0, float(reference.abs().max()))
        if worst[1] > TOLERANCE * scale:
            raise ExportError(
                f"{checkpoint}: onnxruntime's logits differ from PyTorch's by {worst[1]:.2e} "
                f"for {worst[0]} (tolerance {TOLERANCE * scale:.2e}); nothing was written"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar = {
        "format": "mmanet-onnx-2",
        "inputs": records,
        "mask": {"shape": ["batch", len(names)], "order": list(names)},
        "outputs": {"logits": ["batch", *reference.shape[1:]]},
        "shapes": (
            "only the batch dimension is free; every other dimension of the inputs and "
            "logits is fixed at its recorded size"
        ),
        "class_names": meta["class_names"],
        "method": meta.get("method"),
        "checkpoint": meta["checkpoint"],
        "epoch": meta.get("epoch"),
        "code_version": code_version(),
        "opset": opset,
        "onnxruntime": onnxruntime.__version__,
        "max_abs_difference": verification,
    }
    if anti_spoofing:
        sidecar["thresholds"] = decision
        if decision is None:
            sidecar["thresholds_note"] = (
                "not computed (--no-thresholds): no per-combination decision thresholds"
            )
    atomic_write_json(out.with_name(out.name + ".json"), sidecar)
    return sidecar


def network_title(meta: dict[str, Any]) -> str:
    """``the model.name=NAME network``, or ``the network built in Python`` (from_encoders)."""
    if meta.get("builder") == PYTHON_BUILDER:
        return "the network built in Python (from_encoders)"
    name = (meta.get("config") or {}).get("model", {}).get("name", "this")
    return f"the model.name={name} network"


def _temporary_file(out: Path) -> Path:
    """The empty temporary file next to ``out`` that the export writes, its folder made
    first; a folder that cannot be made or written is a one-line OSError naming it."""
    folder = out.parent
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"{out}: cannot create the folder {folder} ({err.strerror or err}); nothing was written"
        ) from err
    try:
        tmp.open("wb").close()
    except OSError as err:
        raise OSError(
            f"{out}: cannot write in the folder {folder} ({err.strerror or err}); "
            "nothing was written"
        ) from err
    return tmp


def _trace(
    graph: DeploymentGraph,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    opset: int,
    what: str,
) -> None:
    """Write ``graph`` traced on ``inputs`` as ONNX to ``path`` (TorchScript exporter, the
    batch dimension dynamic); the exporter's failure is a one-line ExportError on ``what``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's and the legacy exporter's notes
        try:
            with _silenced():  # on failure the exporter prints its whole graph
                torch.onnx.export(
                    graph,
                    inputs,
                    str(path),
                    input_names=input_names,
                    output_names=["logits"],
                    dynamic_axes={name: {0: "batch"} for name in [*input_names, "logits"]},
                    opset_version=opset,
                    dynamo=False,
                )
        except OSError:  # writing the file (a full disk): the system's own message
            raise
        except Exception as err:  # the exporter's own errors name the operator first
            lines = str(err).strip().splitlines() or [""]
            reason = lines[0].split(" Please ")[0].split(" [Caused by")[0][:200]
            raise ExportError(
                f"{what} cannot be exported to ONNX with torch {torch.__version__} "
                f"({type(err).__name__}: {reason}); nothing was written"
            ) from None


def input_records(
    model: UnifiedNetwork, meta: dict[str, Any], inputs: tuple[torch.Tensor, ...]
) -> dict[str, dict[str, Any]]:
    """Per ONNX input (each modality, then ``mask``): its shape, dtype (that of the traced
    ``inputs``) and preprocessing."""
    reader = input_reader(checkpoint_config(Path(meta["checkpoint"]), meta).data)
    names = list(model.modalities)
    preprocessing = [reader.describe(name) for name in names]
    preprocessing.append(f"0/1 presence of each modality, in the order {', '.join(names)}")
    return {
        name: {
            "shape": ["batch", *example.shape[1:]],
            "dtype": str(example.dtype).removeprefix("torch."),
            "preprocessing": text,
        }
        for name, example, text in zip([*names, "mask"], inputs, preprocessing, strict=True)
    }


def verify(
    graph: DeploymentGraph,
    path: str,
    inputs: tuple[torch.Tensor, ...],
    names: Modalities,
    masks: torch.Tensor,
    what: str = "",
) -> tuple[dict[str, float], torch.Tensor]:
    """Max |onnxruntime − PyTorch| of the logits per combination on ``inputs``, and
    PyTorch's logits; onnxruntime's failure is a one-line ExportError on ``what``."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {name: x.numpy() for name, x in zip([*names, "mask"], inputs, strict=True)}
        (onnx_logits,) = session.run(["logits"], feed)
    except Exception as err:  # onnxruntime's errors are long; their first line names the node
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ExportError(
            f"{what or path}: onnxruntime cannot run the exported graph ({first}); "
            "nothing was written"
        ) from None
    with torch.no_grad():
        reference = graph(*inputs)
    difference = (torch.from_numpy(onnx_logits) - reference).abs()
    per_mask = difference.reshape(len(masks), -1).amax(dim=1)
    differences = {
        names.mask_name(mask): float(d) for mask, d in zip(masks.tolist(), per_mask, strict=True)
    }
    return differences, reference


def onnx_summary(sidecar: dict[str, Any]) -> str:
    worst = max(sidecar["max_abs_difference"].items(), key=lambda item: item[1])
    return (
        f"{len(sidecar['max_abs_difference'])} combinations checked with onnxruntime "
        f"{sidecar['onnxruntime']}: max |onnx - torch| = {worst[1]:.2e} ({worst[0]})"
    )


__all__ = ["export_onnx", "onnx_summary"]

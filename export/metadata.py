"""What every exported file records about where it came from (ONNX `metadata_props`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx

from toolkit import __version__
from toolkit.core.fsutil import sha256_file
from toolkit.core.spec import METADATA_PREFIX, IOSpec


def export_metadata(spec: IOSpec, checkpoint: Path, ckpt: dict[str, Any], precision: str, out: Path) -> dict[str, str]:
    """Provenance for `toolkit parity` and humans: the checkpoint is found again by its path
    relative to the model file (no absolute machine paths are embedded) and checked by hash."""
    props = spec.to_metadata()
    props.update(
        {
            f"{METADATA_PREFIX}version": __version__,
            f"{METADATA_PREFIX}precision": precision,
            f"{METADATA_PREFIX}checkpoint": checkpoint.name,
            f"{METADATA_PREFIX}checkpoint_relpath": os.path.relpath(checkpoint.resolve(), out.resolve().parent),
            f"{METADATA_PREFIX}checkpoint_sha256": sha256_file(checkpoint),
            f"{METADATA_PREFIX}recipe": str(ckpt.get("recipe", "")),
            f"{METADATA_PREFIX}epoch": str(ckpt.get("epoch", "")),
        }
    )
    return props


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """An ONNX ModelProto's `metadata_props` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def derived_metadata(source_props: dict[str, str], precision: str, source: Path, out: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The metadata of a model converted from `source` (fp16, int8): the source's props (the
    converters copy them as-is, `precision` included), with the precision reset, the checkpoint's
    relative path re-anchored on `out`'s folder, and the source file named and hashed."""
    props = dict(source_props)
    props[f"{METADATA_PREFIX}precision"] = precision
    rel = props.get(f"{METADATA_PREFIX}checkpoint_relpath")
    if rel:
        target = (source.resolve().parent / rel).resolve()
        props[f"{METADATA_PREFIX}checkpoint_relpath"] = os.path.relpath(target, out.resolve().parent)
    props[f"{METADATA_PREFIX}source_onnx"] = source.name
    props[f"{METADATA_PREFIX}source_onnx_sha256"] = sha256_file(source)
    props[f"{METADATA_PREFIX}version"] = __version__
    props.update(extra or {})
    return props


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> onnx.ModelProto:
    """Replace a ModelProto's `metadata_props` with `props` (onnx's helper replaces, never merges)."""
    onnx.helper.set_model_props(model, {k: str(v) for k, v in props.items()})
    return model


def load_fp32_source(source: Path, making: str) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The fp32 export that fp16/int8 models are derived from, and its toolkit metadata.

    One place for the checks both conversions need: the file exists, loads, and is fp32
    (converting an already-reduced model would compound its error).
    """
    from toolkit.core.errors import UserError

    source = Path(source)
    if not source.is_file():
        raise UserError(f"{source}: no such ONNX file")
    try:
        model = onnx.load(str(source))
    except Exception as e:  # DecodeError and friends
        raise UserError(f"{source}: not a loadable ONNX model ({type(e).__name__})") from e
    props = read_metadata(model)
    precision = props.get(f"{METADATA_PREFIX}precision", "fp32")
    if precision != "fp32":
        raise UserError(f"{source}: is an {precision} model; {making} is made from the fp32 export")
    return model, props

"""What every exported file records about where it came from (ONNX `metadata_props`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from toolkit import __version__
from toolkit.fsutil import sha256_file
from toolkit.spec import METADATA_PREFIX, IOSpec


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

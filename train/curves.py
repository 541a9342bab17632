"""`curves.png`: a run's losses and held-out metrics per epoch, drawn from its history.

Drawn with matplotlib's Agg backend (no screen needed); without matplotlib the run goes on and
says so once. Panels: training and held-out losses, mask IoU / Dice, depth RMSE (and AbsRel and
delta1 where the depth is metric), and the learning rate, so a person sees at a glance whether a
run is still learning, over-fitting or diverging. The IoU of "depth above 0.5" is not drawn: where
little depth is above 0.5 it jumps between 0 and 1 with no change in the error (`train.step`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from toolkit.core.fsutil import atomic_path
from toolkit.core.install import install_hint

PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("train_loss", "val_loss")),
    ("mask", ("val_mask_iou", "val_mask_dice")),
    ("depth", ("val_depth_rmse", "val_depth_absrel", "val_depth_delta1")),
    ("learning rate", ("lr",)),
)
_warned = False


def write_curves(path: Path, history: Sequence[Mapping[str, Any]]) -> Path | None:
    """Write the picture (atomically); None when matplotlib is missing or there is nothing to draw."""
    global _warned
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        if not _warned:
            print(f"curves.png is not drawn: matplotlib is not installed ({install_hint('train')})", file=sys.stderr)
            _warned = True
        return None
    panels = [(title, [k for k in keys if any(_num(r.get(k)) is not None for r in history)]) for title, keys in PANELS]
    panels = [(t, ks) for t, ks in panels if ks]
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.4), dpi=100, layout="constrained")
    for ax, (title, keys) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for key in keys:
            pts = [(float(r["epoch"]), _num(r.get(key))) for r in history if _num(r.get(key)) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) != float("inf") else None

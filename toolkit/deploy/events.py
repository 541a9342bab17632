"""`stream --events FILE|-`: one JSON line per frame, written as the frame finishes.

Why: a box that feeds an alarm or a people counter needs what the model saw, not a video to
decode again. Each line is complete when it is written (flushed), in frame order, so a reader
tailing the file (or the pipe, `-`) sees every frame while the stream runs:

    {"frame": 12, "time_s": 0.48, "coverage": 0.0731, "bbox": [412, 96, 655, 702],
     "depth_median": 0.4127, "flicker": 0.0012, "latency_ms": 41.3}

  * ``frame``: the index of the frame among those the stream ran (0 first); ``time_s``: its
    time: in the video for a file (index / fps), since the first frame was taken for a live
    source (a camera or URL, where frames a newer one replaced are never run);
  * ``coverage``: the share of the picture the mask calls person (mask >= 0.5);
  * ``bbox``: [x0, y0, x1, y1] of those pixels in the camera's pixels (x1, y1 exclusive), null
    when there are none;
  * ``depth_median``: the model's depth grey over the person's pixels (its convention is the
    model's: `toolkit.core.spec`), null when there are none;
  * ``flicker``: mean mask change on the still pixels since the previous frame (null for the first);
  * ``latency_ms``: from the frame leaving the source to this line.

Unlike the other outputs, this file is a log: it grows as frames finish, so it is not written
under a temporary name; a stream that fails part-way leaves the frames it finished.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from ..core.fsutil import check_output_file, ensure_dir

PERSON = 0.5  # the mask threshold a pixel counts as person at (toolkit.core.spec's decoding)


def check_events_target(target: str | Path | None) -> str | Path | None:
    """`-` (standard output), or a file path refused at once when it cannot be written."""
    if target is None or str(target) == "-":
        return None if target is None else "-"
    check_output_file(Path(target))
    return Path(target)


def frame_event(index: int, time_s: float, mask: np.ndarray, depth: np.ndarray, frame_hw: tuple[int, int],
                flicker: float | None, latency_ms: float) -> dict[str, object]:
    """The event of one frame from the model's mask and depth (any size; the box is scaled to
    the camera's `frame_hw`)."""
    person = np.nan_to_num(mask) >= PERSON
    h, w = person.shape
    fh, fw = frame_hw
    bbox = None
    depth_median = None
    if person.any():
        rows, cols = np.flatnonzero(person.any(axis=1)), np.flatnonzero(person.any(axis=0))
        bbox = [int(cols[0] * fw // w), int(rows[0] * fh // h), int(-(-(cols[-1] + 1) * fw // w)), int(-(-(rows[-1] + 1) * fh // h))]
        depth_median = round(float(np.median(np.nan_to_num(depth)[person])), 4)
    return {"frame": index, "time_s": round(time_s, 4), "coverage": round(float(person.mean()), 4),
            "bbox": bbox, "depth_median": depth_median, "flicker": round(flicker, 5) if flicker is not None and np.isfinite(flicker) else None,
            "latency_ms": round(latency_ms, 1)}


class EventLog:
    """Writes events as JSON lines to a file or standard output, each flushed as it is written.
    When the reader of standard output goes away (`| head -1`), `on_closed()` is called once
    (the stream stops as after Ctrl-C, its video kept) and nothing more is written."""

    def __init__(self, target: str | Path, on_closed: Callable[[], None] = lambda: None):
        self.target, self.on_closed = target, on_closed
        self.count = 0
        self.closed = False
        self._own = str(target) != "-"
        if self._own:
            ensure_dir(Path(target).parent)  # as every output: missing folders are made
        self._out: IO[str] = open(target, "w", encoding="utf-8") if self._own else sys.stdout  # noqa: SIM115 - closed in close()

    def write(self, event: dict[str, object]) -> None:
        if self.closed:
            return
        try:
            self._out.write(json.dumps(event, allow_nan=False) + "\n")
            self._out.flush()
        except BrokenPipeError:
            if self._own:
                raise
            self.closed = True
            devnull = os.open(os.devnull, os.O_WRONLY)  # Python's advice: no second error at exit
            os.dup2(devnull, sys.stdout.fileno())
            self.on_closed()
            return
        self.count += 1

    def close(self) -> None:
        if self._own:
            self._out.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

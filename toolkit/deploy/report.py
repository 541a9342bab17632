"""What one `stream` did: `StreamReport` (the summary, and what `stream --json` writes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class StreamReport:
    frames: int = 0
    seconds: float = 0.0
    source: str = ""
    out: Path | None = None
    codec: str = ""
    encoder: str = ""  # the encoder and its settings (`VideoWriter.describe`)
    layout: str = ""  # what each picture shows (toolkit.deploy.compose); "" when none is drawn
    events: int = 0  # lines written to --events
    background: str = ""
    interrupted: bool = False
    masks: int = 0
    fixed_camera: str = ""  # how the background was run: "halves" (features once) or "whole network"
    self_test: str = ""  # the model's self-test at start (toolkit.verify.selftest)
    flicker: float | None = None  # mean mask change on still pixels between frames (toolkit.deploy.temporal)
    background_events: list[str] = field(default_factory=list)  # relearnt backgrounds (toolkit.deploy.adapt)
    received: int = 0  # frames the source delivered (live: the dropped ones included)
    dropped: int = 0  # live mode: frames a newer one replaced before inference took them
    reconnects: int = 0
    latency_ms_p50: float | None = None  # from a frame leaving the source to its outputs written
    latency_ms_p99: float | None = None
    smooth: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """What `stream --json` writes."""
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        return d | {"fps": round(self.fps, 3)}

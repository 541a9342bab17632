"""The layer table: every module call with its output shape and parameters.

The seed's summary tool counted a module's parameters at every call, so the Siamese stem and
the shared tail were counted twice (677,824). Here each call is listed, but a module's
parameters count once (493,408, what the forward uses); the difference is explained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .model import DepthwiseSeparableConv, EVA4Net


@dataclass
class LayerRow:
    index: int
    name: str
    kind: str
    shape: tuple[int, ...]
    params: int  # parameters of this module (counted at each call)
    first_call: bool  # False when the module's weights were already used by an earlier call


@dataclass
class Summary:
    rows: list[LayerRow]
    params_used: int
    params_per_call: int
    input_size: tuple[int, int]

    @property
    def reused(self) -> dict[str, int]:
        """Module groups called more than once -> their parameter count."""
        out: dict[str, int] = {}
        for r in self.rows:
            if not r.first_call and r.params:
                group = r.name.split(".", 1)[0]
                out[group] = out.get(group, 0) + r.params
        return out

    def explain(self) -> str:
        stem = sum(v for k, v in self.reused.items() if k in ("convblock1", "convblock2", "convblock2_"))
        tail = self.params_per_call - self.params_used - stem
        return (
            f"The seed's summary counts parameters at every call: {self.params_per_call:,} = "
            f"{self.params_used:,} used + {stem:,} (Siamese stem called again for fgbg) + "
            f"{tail:,} (shared tail called again for depth)."
        )


def summarize(height: int = 128, width: int = 128) -> Summary:
    """Run one forward with hooks on every leaf module and collect the calls in order.

    The forward runs on PyTorch's `meta` device: shapes only, no memory for activations, so any
    input size is cheap. Only the architecture matters here, not a checkpoint's weights.
    """
    with torch.device("meta"):
        net = EVA4Net().eval()
    names = {m: n for n, m in net.named_modules()}
    rows: list[LayerRow] = []
    seen: set[nn.Module] = set()

    def hook(module: nn.Module, _inp: object, out: torch.Tensor) -> None:
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(
            LayerRow(len(rows) + 1, names[module], type(module).__name__, tuple(out.shape), params, module not in seen)
        )
        seen.add(module)

    # Leaves plus the depthwise-separable wrappers: the same 91 calls the seed's table lists.
    leaves = [m for m in net.modules() if not list(m.children()) or isinstance(m, DepthwiseSeparableConv)]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, height, width, device="meta")
            net(x, x)
    finally:
        for h in handles:
            h.remove()
    used = sum(p.numel() for p in net.parameters())
    per_call = sum(r.params for r in rows)
    return Summary(rows, used, per_call, (height, width))

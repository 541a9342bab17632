"""The markdown and JSON that `gpu_inference.py` writes after every row (torch-free, so the
figures of a GPU run can be re-rendered anywhere from its JSON)."""

from __future__ import annotations

import json
from pathlib import Path

SEED = {"device": "NVIDIA H200", "eager fp32, batch 256": 3451.0, "compiled fp16, batch 256": 12383.0}  # from the issue
BASELINE = "literal fp32"


def verdict(p: dict) -> str:
    return "pass" if p["passed"] else "FAIL: " + "; ".join(p["failures"])


def parity_table(rows: list[dict]) -> list[str]:
    out = ["| model | precision | pairs | max abs mask | max abs depth | mask IoU | mask Dice | depth RMSE | empty masks | verdict |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for p in rows:
        mx = {k: "nan" if v is None else f"{v:.1e}" for k, v in p["max_abs"].items()}
        out.append(f"| {p['model']} | {p['precision']} | {p['pairs']} | {mx['mask']} | {mx['depth']} | {p['mask_iou']:.4f} | "
                   f"{p['mask_dice']:.4f} | {p['depth_rmse']:.5f} | {p['empty_masks']} | {verdict(p)} |")
    return out


def write(out: Path, report: dict) -> None:
    from toolkit.core.fsutil import write_text_atomic

    write_text_atomic(out / "gpu_inference.json", json.dumps(report, indent=2) + "\n")
    h, o = report["header"], report["onnx"]
    base = {r["batch"]: r["images_per_s"] for r in report["results"] if r["config"] == BASELINE}
    parity = {p["model"]: p for p in report["parity"]}
    cc = f" (compute capability {h['compute_capability']}), driver {h['driver']}" if h["compute_capability"] else ""
    lines = [f"# GPU inference speed\n\n{h['device']}{cc}; torch {h['torch']}, CUDA {h['cuda']}, cuDNN {h['cudnn']}; "
             f"onnxruntime {h['onnxruntime']} ({', '.join(h['ort_providers'])}).\n",
             f"{h['size']} px; images/s = pairs/s with the inputs already on the device, {h['seconds']} s per row after warm-up, one sync at "
             f"the end; {h['half_name']} = {h['half']}; TF32 convolutions {'on' if h['tf32_conv'] else 'off'} in the timed rows (PyTorch's "
             f"default), off in the parity reference; cudnn.benchmark {'on' if h['cudnn_benchmark'] else 'off'}.\n",
             f"Seed network on an {SEED['device']} (from the issue): {SEED['eager fp32, batch 256']:,.0f} images/s eager fp32 at batch 256, "
             f"{SEED['compiled fp16, batch 256']:,.0f} compiled fp16."]
    comp = max((r for r in report["results"] if r["batch"] == 256 and "compile" in r["config"]), key=lambda r: r["images_per_s"], default=None)
    if 256 in base:
        lines.append(f"This run ({h['device']}{'' if h['device'] == SEED['device'] else ', another card'}): literal fp32 eager "
                     f"{base[256]:,.0f} at batch 256 ({base[256] / SEED['eager fp32, batch 256']:.2f}x the seed's)"
                     + (f"; best compiled, {comp['config']}: {comp['images_per_s']:,.0f} "
                        f"({comp['images_per_s'] / SEED['compiled fp16, batch 256']:.2f}x)" if comp else "") + ".")
    lines += ["\n## PyTorch\n", "| config | batch | images/s | vs literal fp32 eager | ms/batch | calls | first call s | parity |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in report["results"]:
        ratio = f"{r['images_per_s'] / base[r['batch']]:.2f}x" if r["batch"] in base else ""
        p = parity.get(r["config"])
        lines.append(f"| {r['config']} | {r['batch']} | {r['images_per_s']:,.0f} | {ratio} | {r['ms_per_batch']:.2f} | {r['calls']} | "
                     f"{r['first_call_s']:.1f} | {verdict(p) if p else ''} |")
    if c := report["copy"]:
        extra = f"; pageable {c['pageable_ms_per_batch']:.2f} ms, pinned {c['gb_per_s']:.1f} GB/s" if "pageable_ms_per_batch" in c else ""
        lines.append(f"| {c['config']}{extra} | {c['batch']} | {c['images_per_s']:,.0f} | | {c['ms_per_batch']:.2f} | | | |")
    lines += [f"| {name} | | skipped: {why} | | | | | |" for name, why in report["skipped"]]
    lines += ["\n### Parity vs literal fp32 eager (TF32 off), same synthetic pairs\n", *parity_table(report["parity"])]
    lines += ["\n## ONNX\n", *(f"- {t}" for t in o["tried"]), "", "| export | file | precision | run_exports s | check |", "| --- | --- | --- | ---: | --- |"]
    for e in o["exports"]:
        lines.append(f"| {e['export']} | {e['file']} | {e.get('precision', '')} | {e.get('seconds', 0):.0f} | {e.get('summary') or 'FAILED: ' + e['error']} |")
    lines += [f"\n{o['note']}" if o["note"] else "", "", "| model | runtime | batch | images/s | vs literal fp32 eager | ms/batch |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in o["rows"]:
        ratio = f"{r['images_per_s'] / base[r['batch']]:.2f}x" if r["batch"] in base and "CPU" not in r["runtime"] else ""
        lines.append(f"| {r['model']} | {r['runtime']} | {r['batch']} | {r['images_per_s']:,.1f} | {ratio} | {r['ms_per_batch']:.2f} |")
    if o["parity"]:
        lines += ["\n### ONNX parity vs the PyTorch fp32 checkpoint (TF32 off)\n", *parity_table(o["parity"])]
    if "total_s" in report:
        lines.append(f"\nTotal {report['total_s']:.0f} s (budget {h['budget_s']:.0f} s).")
    write_text_atomic(out / "gpu_inference.md", "\n".join(lines) + "\n")

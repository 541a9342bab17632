"""`toolkit serve` under load: dynamic batching against `--max-batch 1`, in the same run.

Starts the real server (a subprocess, 127.0.0.1, a free port) once per setting, sends a bounded
load — `--requests` POST /v1/infer from `--clients` concurrent clients, each waiting for its
answer before sending the next — and reports p50/p99 latency and requests/s. Any answer other
than 200 is an error: the script prints them and exits 1. It stops by itself.

    python benchmarks/serve_load.py                      # epoch-12 weights exported to ONNX (needs torch once)
    python benchmarks/serve_load.py --model model.onnx --requests 200 --clients 8
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu_inference import say_if_busy  # noqa: E402  (starts the load reading)


def png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def start_server(model: Path, *args: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "serve", "--model", str(model), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line} {proc.stderr.read()}")
    return proc, "http://" + line.split("http://", 1)[1].split()[0].rstrip("/")


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
    start = time.perf_counter()
    req = urllib.request.Request(url + "/v1/infer", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.perf_counter() - start


def load(url: str, body: bytes, headers: dict[str, str], requests: int, clients: int) -> dict[str, float]:
    for _ in range(3):  # warm-up: first-run allocations, thread pools
        post(url, body, headers)
    per_client = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for batch in pool.map(lambda n: [post(url, body, headers) for _ in range(n)], per_client) for r in batch]
    wall = time.perf_counter() - start
    latencies = np.array([t for _, t in results]) * 1000
    errors = [s for s, _ in results if s != 200]
    return {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)), "rps": len(results) / wall,
            "errors": len(errors), "statuses": sorted(set(errors))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model file; default: the epoch-12 weights as ONNX")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--size", default="160x120", help="uploaded image size WxH")
    args = parser.parse_args()

    from toolkit.deploy.client import encode_multipart
    from toolkit.deploy.footage import background, walking_frames

    w, h = (int(v) for v in args.size.lower().split("x"))
    body, headers = encode_multipart({"bg": ("bg.png", png(background(h, w)), "image/png"),
                               "fgbg": ("fgbg.png", png(walking_frames(3, h, w)[1]), "image/png")})
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from benchmarks.stream import default_model

            model = default_model(Path(tmp))
        else:
            model = args.model
        rows = {}
        for name, batch in ((f"--max-batch {args.max_batch}", args.max_batch), ("--max-batch 1 (baseline)", 1)):
            proc, url = start_server(model, "--max-batch", str(batch))
            try:
                rows[name] = load(url, body, headers, args.requests, args.clients)
            finally:
                proc.terminate()
                out, _ = proc.communicate(timeout=60)
            rows[name]["server"] = out.strip().splitlines()[-1] if out.strip() else ""

    base = rows["--max-batch 1 (baseline)"]
    print(f"{os.cpu_count()} cores; model {Path(model).name}; {args.requests} requests from {args.clients} clients; {w}x{h} PNG pairs")
    print()
    print("| server | p50 ms | p99 ms | req/s | vs --max-batch 1 | errors | batching |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, r in rows.items():
        batching = r["server"].split(": ", 1)[-1]
        print(f"| {name} | {r['p50']:.0f} | {r['p99']:.0f} | {r['rps']:.1f} | {r['rps'] / base['rps']:.2f}x | {r['errors']} | {batching} |")
    say_if_busy()
    failed = {name: r["statuses"] for name, r in rows.items() if r["errors"]}
    if failed:
        print(f"errors: {failed}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()

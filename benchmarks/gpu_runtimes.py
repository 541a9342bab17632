"""The GPU runtimes' checks in one run: what this machine has, and every test of the TensorRT
engine builder and runner, the CUDA buffers and ONNX Runtime's GPU providers, each with what it
did or why it could not run.

    python benchmarks/gpu_runtimes.py OUT_DIR [--seconds 240]

Most of these tests skip where TensorRT, cuda-python, a GPU or onnxruntime-gpu is missing, and a
skipped test looks the same as a passed one in a summary line. A lent GPU machine has a few
minutes and may have only some of them, so this script says, per test, which ran, and for each
reason how many could not: that is what a GPU session reports. Results are written after every
test (OUT_DIR/gpu_runtimes.json, .md), so a run stopped from outside still leaves what it did;
a test not started before `--seconds` is reported as out of time. Exit 1 when a test failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What each test file covers (the rest of tests/runtime: the runners these sit beside).
TOPICS = {
    "tests/runtime/test_providers.py": "ONNX Runtime's CUDA and TensorRT providers",
    "tests/runtime/test_gpu_libs.py": "ONNX Runtime's GPU build: driver, libraries",
    "tests/runtime/test_tensorrt_runner.py": "engine runner, CUDA buffers (cuda-python)",
    "tests/export/test_tensorrt.py": "engine builder",
    "tests/export/test_formats.py": "export table, engine rows and their GPU check",
    "tests/core/test_install.py": "extras (TensorRT and CUDA pins)",
    "tests/tasks/test_doctor.py": "doctor",
}
# The GPU-only tests first, then the other runners, then the rest: a run short of time drops the
# tests that run on any machine (files, not folders: pytest collects a file once, at its folder's place).
RUNNERS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "runtime").glob("test_*.py"))
DEFAULT_TESTS = tuple(dict.fromkeys([*list(TOPICS)[:4], *RUNNERS, *list(TOPICS)[4:]]))
OUT_OF_TIME = "the run's time was spent before this test started"


def machine() -> list[dict]:
    """`toolkit doctor`'s checks: the versions and verdicts that say which tests can run here."""
    from toolkit.tasks.doctor import run_checks

    return [c.to_dict() for c in run_checks()]


class Recorder:
    """A pytest plugin: one row per test (its outcome, and the reason it skipped or failed),
    written out after each; tests not started by the deadline are skipped as out of time."""

    def __init__(self, out: Path, deadline: float, header: dict) -> None:
        self.out, self.deadline, self.header = out, deadline, header
        self.rows: dict[str, dict] = {}

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if time.monotonic() > self.deadline:
            pytest.skip(OUT_OF_TIME)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.failed or report.skipped):
            return  # a passed setup or teardown adds nothing to the call's row
        row = {"test": report.nodeid, "outcome": report.outcome, "seconds": round(report.duration, 2), "why": ""}
        if report.skipped and isinstance(report.longrepr, tuple):
            row["why"] = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            row["outcome"] = "failed" if report.when == "call" else f"error in {report.when}"
            row["why"] = _first_line(report)
        if report.nodeid not in self.rows or row["outcome"] != "passed":
            self.rows[report.nodeid] = row
        write(self.out, self.header, list(self.rows.values()))


def _first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return (text.strip().splitlines() or [""])[0][:200]


def topic(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return TOPICS.get(path, "runners and their conformance" if path.startswith("tests/runtime/") else path)


def summary(rows: list[dict]) -> dict:
    by_topic: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        by_topic[topic(r["test"])][r["outcome"]] += 1
    skipped = Counter(r["why"] for r in rows if r["outcome"] == "skipped")
    return {
        "counts": dict(Counter(r["outcome"] for r in rows)),
        "by_topic": {t: dict(c) for t, c in by_topic.items()},
        "could_not_run": [{"why": why, "tests": n} for why, n in skipped.most_common()],
        "failed": [r for r in rows if r["outcome"] not in ("passed", "skipped")],
    }


def markdown(header: dict, rows: list[dict]) -> str:
    s = summary(rows)
    lines = [f"# GPU runtimes: {header['started']}", "", "| piece | version | usable | verdict |", "| --- | --- | --- | --- |"]
    lines += [f"| {c['name']} | {c['version']} | {'yes' if c['ok'] else 'no'} | {c['verdict']} |" for c in header["machine"]]
    lines += ["", "| what | passed | failed | skipped |", "| --- | ---: | ---: | ---: |"]
    for t, c in s["by_topic"].items():
        bad = sum(n for k, n in c.items() if k not in ("passed", "skipped"))
        lines.append(f"| {t} | {c.get('passed', 0)} | {bad} | {c.get('skipped', 0)} |")
    if s["could_not_run"]:
        lines += ["", "Could not run here:", "", "| why | tests |", "| --- | ---: |"]
        lines += [f"| {c['why']} | {c['tests']} |" for c in s["could_not_run"]]
    if s["failed"]:
        lines += ["", "Failed:", "", "| test | outcome | first line |", "| --- | --- | --- |"]
        lines += [f"| {r['test']} | {r['outcome']} | {r['why'].replace('|', '/')} |" for r in s["failed"]]
    lines += ["", "| test | outcome | s | why |", "| --- | --- | ---: | --- |"]
    lines += [f"| {r['test']} | {r['outcome']} | {r['seconds']} | {r['why'].replace('|', '/')} |" for r in rows]
    return "\n".join(lines) + "\n"


def write(out: Path, header: dict, rows: list[dict]) -> None:
    """Both reports, each under a temporary name and renamed: a kill never leaves half a file."""
    for name, text in (("gpu_runtimes.json", json.dumps({**header, **summary(rows), "tests": rows}, indent=1)),
                       ("gpu_runtimes.md", markdown(header, rows))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=float, default=240, help="start no test after this many seconds")
    ap.add_argument("--tests", nargs="+", default=list(DEFAULT_TESTS), help="test files or folders (default: %(default)s)")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()  # the run changes to the repository root
    args.out.mkdir(parents=True, exist_ok=True)
    header = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), "tests_asked": args.tests}
    recorder = Recorder(args.out, time.monotonic() + args.seconds, header)
    write(args.out, header, [])
    os.chdir(ROOT)  # node ids relative to the repository, as TOPICS names them
    code = pytest.main([*args.tests, "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:randomly"], plugins=[recorder])
    rows = list(recorder.rows.values())
    write(args.out, header, rows)
    s = summary(rows)
    print(f"gpu_runtimes: {s['counts']}; could not run: {s['could_not_run'] or 'nothing'}")
    return 1 if s["failed"] or code not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())

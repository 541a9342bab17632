"""Every TensorRT name the engine builder and runner use exists in NVIDIA's real bindings.

TensorRT cannot run without a GPU, but its Python bindings are a 1 MB wheel per version
(`tensorrt-cuXX-bindings`): the compiled module registers each class, enum member, method and
property under its name as a NUL-terminated string. The names this code reads from TensorRT are
found by walking its syntax tree (attributes of `trt` and of the values made from it, function by
function), and each must be registered in every TensorRT the GPU extras admit: the oldest 10.x
(`gpu-cu12`), the oldest of `gpu` and the newest 11.x that version-compatible engines run on.
A renamed or removed API (TensorRT 11 dropped BuilderFlag.FP16 and EXPLICIT_BATCH) fails here.
`.ci/run` downloads the wheels into the folder TOOLKIT_TEST_TRT_BINDINGS names; without it the
API check skips (the walk itself is tested everywhere).
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

SOURCES = [ROOT / "export" / "tensorrt.py", ROOT / "toolkit" / "runtime" / "tensorrt_runner.py"]
# The oldest TensorRT each GPU extra admits (pyproject.toml) and the newest 11.x: the wheels .ci/run
# fetches (it reads this list).
WHEELS = ("tensorrt-cu12-bindings==10.0.1", "tensorrt-cu13-bindings==10.13.3.9", "tensorrt-cu13-bindings==11.4.0.106")
VERSIONS = tuple(w.split("==")[1] for w in WHEELS)

Key = tuple[str, str]  # ("name", local variable) or ("self", attribute)


def _root(node: ast.AST) -> Key | None:
    """The variable (or self attribute) an attribute/call/subscript chain starts from."""
    while True:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return ("self", node.attr)
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        elif isinstance(node, ast.Name):
            return ("name", node.id)
        else:
            return None


def _key(target: ast.AST) -> Key | None:
    if isinstance(target, ast.Name):
        return ("name", target.id)
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
        return ("self", target.attr)
    return None


def _assignments(scope: ast.AST) -> Iterator[tuple[ast.AST, ast.AST]]:
    """(target, value) of every assignment in `scope`, tuples paired element by element."""
    def pairs(t: ast.AST, v: ast.AST) -> Iterator[tuple[ast.AST, ast.AST]]:
        if isinstance(t, ast.Tuple) and isinstance(v, ast.Tuple) and len(t.elts) == len(v.elts):
            for a, b in zip(t.elts, v.elts):
                yield from pairs(a, b)
        else:
            yield t, v

    for n in ast.walk(scope):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                yield from pairs(t, n.value)
        elif isinstance(n, (ast.AnnAssign, ast.NamedExpr)) and n.value is not None:
            yield n.target, n.value


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    return [a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)]


def tensorrt_names(source: str) -> set[str]:
    """The names read from TensorRT objects in `source`: attributes of the module `trt`, and of
    every variable assigned from one (per function), every self attribute (per module) and every
    parameter a call of this module passes one to."""
    tree = ast.parse(source)
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    by_name = {f.name: f for f in scopes}
    selfs: set[Key] = set()
    seeded: dict[ast.AST, set[Key]] = {f: set() for f in scopes}  # parameters given a TensorRT object
    local: dict[ast.AST, set[Key]] = {}
    for _ in range(len(scopes) + 2):  # what one function makes, another reads
        for scope in scopes:
            known = {("name", "trt")} | selfs | seeded[scope]
            assigns = list(_assignments(scope))
            grew = True
            while grew:
                grew = False
                for t, v in assigns:
                    k = _key(t)
                    if k is not None and k not in known and _root(v) in known:
                        known.add(k)
                        grew = True
            local[scope] = known
            selfs |= {k for k in known if k[0] == "self"}
            for call in (n for n in ast.walk(scope) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
                callee = by_name.get(call.func.id)
                if callee is None:
                    continue
                params = _params(callee)
                given = [*zip(params, call.args), *((k.arg, k.value) for k in call.keywords if k.arg)]
                seeded[callee] |= {("name", p) for p, arg in given if _root(arg) in known}
    used: set[str] = set()
    for scope, known in local.items():
        for n in ast.walk(scope):
            if isinstance(n, ast.Attribute) and not n.attr.startswith("__"):
                base = n.value
                k = _key(base) if isinstance(base, (ast.Name, ast.Attribute)) else None
                if k is None:
                    k = _root(base)
                if k in known and not (isinstance(base, ast.Name) and base.id == "self"):
                    used.add(n.attr)
    return used


def compiled_module(wheel: Path) -> bytes:
    """The compiled module of a bindings wheel: pybind11 registers every name as a C string."""
    with zipfile.ZipFile(wheel) as z:  # BadZipFile for a download cut short: the fixture skips it
        [member] = [m for m in z.namelist() if re.search(r"/tensorrt[^/]*\.so$", m)]
        return z.read(member)


# Names the linker stores only as the tail of a longer string ("Builder" of "IBuilder", "serialize"
# of "deserialize", "INPUT" of "CONDITIONAL_INPUT"): found by their end alone, so checked weakly. A
# name used by the code that is not registered whole must be one of these (reviewed), or the test fails.
TAIL_ONLY = frozenset({"Builder", "DLA", "INPUT", "Logger", "Runtime", "num_errors", "serialize"})


def registered(blob: bytes, name: str) -> bool:
    """`name` is a NUL-terminated string of the module, whole, or (for TAIL_ONLY) as a tail."""
    return (b"\0" + name.encode() + b"\0" in blob) or (name in TAIL_ONLY and name.encode() + b"\0" in blob)


def test_the_walk_finds_the_calls_and_only_them():
    source = '''
def build(path):
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config, net = builder.create_builder_config(), builder.create_network(0)
    config.set_flag(trt.BuilderFlag.TF32)
    engine = Path(path)
    return engine.with_name("x"), net.num_inputs

class R:
    def load(self):
        self._engine = trt.Runtime(None).deserialize_cuda_engine(b"")
    def use(self):
        return self._engine.num_io_tensors, self._other.size
'''
    assert tensorrt_names(source) == {"Builder", "Logger", "WARNING", "create_builder_config", "create_network", "set_flag",
                                      "BuilderFlag", "TF32", "num_inputs", "Runtime", "deserialize_cuda_engine",
                                      "num_io_tensors"}


def test_the_engine_code_reads_the_tensorrt_api_it_is_known_to():
    used = set().union(*(tensorrt_names(p.read_text()) for p in SOURCES))
    for name in ("build_serialized_network", "set_tensor_address", "execute_async_v3", "engine_host_code_allowed",
                 "hardware_compatibility_level", "get_tensor_profile_shape", "clear_flag", "TF32"):
        assert name in used, f"{name}: the walk no longer sees the code's TensorRT calls"
    assert not used & {"with_name", "resolve", "max", "json"}, "a Path or a profile taken for a TensorRT object"


@pytest.fixture(scope="module")
def bindings() -> dict[str, bytes]:
    folder = Path(os.environ.get("TOOLKIT_TEST_TRT_BINDINGS", ""))
    found = {}
    for version in VERSIONS:
        wheels = sorted(folder.glob(f"tensorrt_cu*_bindings-{version}-*.whl")) if folder.name else []
        if wheels:
            with contextlib.suppress(zipfile.BadZipFile, ValueError):
                found[version] = compiled_module(wheels[0])
    if not found:
        pytest.skip("no TensorRT bindings wheels given (TOOLKIT_TEST_TRT_BINDINGS, fetched by .ci/run)")
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_every_tensorrt_name_the_code_uses_is_in_the_real_bindings(bindings, version):
    if version not in bindings:
        pytest.skip(f"the TensorRT {version} bindings wheel was not fetched")
    blob = bindings[version]
    assert all(registered(blob, n) for n in ("Builder", "IBuilderConfig", "set_flag", "execute_async_v3")), "not TensorRT's bindings"
    assert not registered(blob, "no_such_tensorrt_name_at_all") and not registered(blob, "uilder")  # a tail, not listed
    missing = {}
    for path in SOURCES:
        gone = sorted(n for n in tensorrt_names(path.read_text()) if not registered(blob, n))
        if gone:
            missing[path.relative_to(ROOT).as_posix()] = gone
    assert not missing, f"TensorRT {version} registers none of these names: {missing}"


def test_a_name_tensorrt_11_removed_is_found_missing(bindings):
    """The check can fail: TensorRT 11 dropped BuilderFlag.FP16 and EXPLICIT_BATCH (always strongly typed)."""
    if "11.4.0.106" not in bindings or "10.13.3.9" not in bindings:
        pytest.skip("needs the 10.13 and 11.4 bindings wheels")
    for name in ("FP16", "EXPLICIT_BATCH"):
        assert registered(bindings["10.13.3.9"], name) and not registered(bindings["11.4.0.106"], name)

"""No file the toolkit reads can run code: proven over the source tree, not by convention.

Every `torch.load` must pass `weights_only=True` literally; the only unpicklers allowed are the
restricted ones in toolkit/net/legacy.py (allow-list of the original author's classes), and they must
override `find_class`. `pickle.load(s)`, `marshal`, `dill`, `joblib.load` and `numpy.load(...,
allow_pickle=True)` appear nowhere.
"""

from __future__ import annotations

import ast

from tests.conftest import ROOT

PACKAGES = ("toolkit", "train", "export")
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
UNPICKLER_HOME = ROOT / "toolkit" / "net" / "legacy.py"


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, _dotted(node.func)


def test_the_tree_is_scanned():
    assert len(SOURCES) > 20 and UNPICKLER_HOME in SOURCES


def unsafe_loading(path, source: str | None = None) -> list[str]:
    """Every way `path` (or `source`, read as that file) could run code from a file it reads,
    one line each ("file:line: why")."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    found = []
    for call, name in _calls(tree):
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        kw = {k.arg: k.value for k in call.keywords}
        if name.endswith("torch.load") and not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
            found.append(f"{where}: torch.load without weights_only=True")
        if name in ("pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "dill.load", "joblib.load"):
            found.append(f"{where}: {name} can run code from the file")
        if name.endswith(("np.load", "numpy.load")) and isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value:
            found.append(f"{where}: allow_pickle")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(_dotted(b).endswith("Unpickler") for b in node.bases):
            if path != UNPICKLER_HOME:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: an unpickler outside toolkit/net/legacy.py")
            if "find_class" not in {n.name for n in node.body if isinstance(n, ast.FunctionDef)}:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} must restrict globals via find_class")
    return found


def test_no_source_file_loads_unsafely():
    """One scan of the whole tree; a failure lists every offending place at once."""
    found = [line for path in SOURCES for line in unsafe_loading(path)]
    assert found == [], "\n".join(found)


def test_the_scan_finds_each_unsafe_way():
    """The scan can fail: a file with each forbidden call is reported line by line."""
    bad = ROOT / "toolkit" / "_unsafe_probe.py"
    code = ("import pickle, torch, numpy as np\n"
            "torch.load('m.pt')\n"
            "pickle.loads(b'')\n"
            "np.load('a.npy', allow_pickle=True)\n"
            "class U(pickle.Unpickler):\n    pass\n")
    found = unsafe_loading(bad, code)
    assert [f.split(": ", 1)[1] for f in found] == [
        "torch.load without weights_only=True", "pickle.loads can run code from the file", "allow_pickle",
        "an unpickler outside toolkit/net/legacy.py", "U must restrict globals via find_class"]


def test_checkpoints_are_loaded_with_weights_only():
    """The one torch.load there is: in toolkit/net/checkpoint.py (so the scan above has something to check)."""
    found = [
        (p, c) for p in SOURCES for c, name in _calls(ast.parse(p.read_text())) if name.endswith("torch.load")
    ]
    assert [p.name for p, _ in found] == ["checkpoint.py"]

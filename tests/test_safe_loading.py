"""No file the toolkit reads can run code: proven over the source tree, not by convention.

Every `torch.load` must pass `weights_only=True` literally; the only unpicklers allowed are the
restricted ones in toolkit/net/legacy.py (allow-list of the original author's classes), and they must
override `find_class`. `pickle.load(s)`, `marshal`, `dill`, `joblib.load` and `numpy.load(...,
allow_pickle=True)` appear nowhere.
"""

from __future__ import annotations

import ast

import pytest

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


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_loading(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for call, name in _calls(tree):
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        if name.endswith("torch.load"):
            kw = {k.arg: k.value for k in call.keywords}
            assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, (
                f"{where}: torch.load without weights_only=True"
            )
        assert name not in ("pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "dill.load", "joblib.load"), (
            f"{where}: {name} can run code from the file"
        )
        if name.endswith(("np.load", "numpy.load")):
            kw = {k.arg: k.value for k in call.keywords}
            assert not (isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value), f"{where}: allow_pickle"
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(_dotted(b).endswith("Unpickler") for b in node.bases):
            assert path == UNPICKLER_HOME, f"{path.relative_to(ROOT)}: an unpickler outside toolkit/net/legacy.py"
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            assert "find_class" in methods, f"{node.name} must restrict globals via find_class"


def test_checkpoints_are_loaded_with_weights_only():
    """The one torch.load there is: in toolkit/net/checkpoint.py (so the scan above has something to check)."""
    found = [
        (p, c) for p in SOURCES for c, name in _calls(ast.parse(p.read_text())) if name.endswith("torch.load")
    ]
    assert [p.name for p, _ in found] == ["checkpoint.py"]

"""The shape of the code itself: no import cycles between the project's modules (lazy imports
included), and no library function longer than a screen."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("toolkit", "train", "export")
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, tuple[Path, list[str]]]:
    """module name -> (file, the package its relative imports start from)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
                base = parts
            else:
                base = parts[:-1]
            found[".".join(parts)] = (path, base)
    return found


def import_graph() -> dict[str, set[str]]:
    """Every import statement, at module level or inside a function (a lazy import still runs,
    so it still closes a cycle), including `if TYPE_CHECKING:` ones."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, base) in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    origin = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                deps.add(origin)
                deps.update(f"{origin}.{alias.name}" for alias in node.names)  # `from pkg import module`
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "toolkit.runtime.base" in graph["toolkit.runtime"]  # from .base import ...
    assert "toolkit.net.checkpoint" in graph["toolkit.runtime.torch_runner"]  # imported inside a method


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def _imports_torch_at_module_level(path: Path) -> bool:
    for node in ast.parse(path.read_text()).body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        if any(n == "torch" or n.startswith("torch.") for n in names):
            return True
    return False


def test_toolkit_is_packages_by_concept_and_only_net_imports_torch_at_module_level():
    """The folders say the architecture: no loose module beside the packages, and the edge
    install's boundary is a folder (torch-side code in toolkit/net, lazily imported elsewhere)."""
    loose = sorted(p.name for p in (ROOT / "toolkit").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py"], loose
    torch_side = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "toolkit").rglob("*.py") if _imports_torch_at_module_level(p))
    assert torch_side and all(p.startswith("toolkit/net/") for p in torch_side), torch_side
    assert _imports_torch_at_module_level(ROOT / "toolkit" / "net" / "model.py")


def test_no_library_function_is_longer_than_a_screen():
    long = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}::{node.name} ({lines} lines)")
    assert long == []


def test_architecture_page_lists_the_formats_table():
    """docs/architecture.md's formats table is the table the code runs: same rows, same order,
    same file names and descriptions."""
    from export.formats import FORMATS

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## The export formats", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    want = [f"| `{f.key}` | `{f.filename}` | {f.description} |" for f in FORMATS]
    assert rows == want


def test_architecture_page_python_example_runs(exported_onnx, imported_ckpt):
    """The page's Python block is code, not prose: it runs against the test models."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {"MODEL": exported_onnx, "CKPT": imported_ckpt}
    exec(compile(block, "docs/architecture.md", "exec"), namespace)  # noqa: S102 - our own page
    assert namespace["out"]["mask"].shape[:2] == (2, 1)


def test_every_path_the_architecture_page_names_exists():
    """A module that moves takes the page with it: every `folder/` or `module.py` it names is there."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:toolkit|export|train|tests|benchmarks|docs)/[\w/]*(?:\.py|\.md|/))`", text))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert len(named) > 20 and missing == [], missing

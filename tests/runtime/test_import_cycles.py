"""No import cycles in stylestream: every module imports on its own in a fresh interpreter, and the graph
of module-level imports (what runs at import time) has no cycle, so the import order never decides
whether a name exists yet (as when models/__init__ defined ARCHITECTURES that its members imported)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "stylestream"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        if not name.endswith("__main__"):  # running the CLI is not importing it
            out[name] = path
    return out


def _import_time_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """stylestream modules imported when `name` is imported: top-level statements only (also inside
    top-level if/try), not function bodies or `if TYPE_CHECKING:` blocks. Importing a.b.c also runs
    a.b's __init__ (unless the importer is inside a.b, whose __init__ is then already running)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)

    visit(ast.parse(path.read_text()).body)
    edges = set()
    for target in (t for t in found if t in modules):
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            parent = ".".join(parts[:i])
            if parent in modules and (i == len(parts) or not (name == parent or name.startswith(parent + "."))):
                edges.add(parent)
    return edges - {name}


def test_module_level_imports_form_no_cycle():
    modules = _modules()
    graph = {name: _import_time_imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            walk(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_cycle(tmp_path):
    """The check above must be able to fail: the old models/__init__ <-> models/johnson pair is a cycle."""
    init = tmp_path / "stylestream" / "models" / "__init__.py"
    member = init.with_name("johnson.py")
    init.parent.mkdir(parents=True)
    init.write_text("ARCHITECTURES = {}\nfrom stylestream.models import johnson\n")
    member.write_text("from stylestream.models import ARCHITECTURES\n")
    modules = {"stylestream.models": init, "stylestream.models.johnson": member}
    assert _import_time_imports("stylestream.models", init, modules) == {"stylestream.models.johnson"}
    assert _import_time_imports("stylestream.models.johnson", member, modules) == {"stylestream.models"}


_ISOLATED = """
import importlib, json, sys
failed = {}
for name in json.loads(sys.argv[1]):
    for m in [m for m in sys.modules if m == "stylestream" or m.startswith("stylestream.")]:
        del sys.modules[m]  # each module starts from a stylestream-free interpreter (torch stays loaded)
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def test_every_module_imports_on_its_own():
    names = list(_modules())
    result = subprocess.run([sys.executable, "-c", _ISOLATED, json.dumps(names)], capture_output=True, text=True,
                            timeout=300, check=True, cwd=PACKAGE.parent)  # fmt: skip
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {}


@pytest.mark.parametrize("module", ["stylestream.models.johnson", "stylestream.models.lite", "stylestream.models.io",
                                    "stylestream.export.options", "stylestream.export.onnx_export",
                                    "stylestream.export.int8", "stylestream.runtime.loader"])  # fmt: skip
def test_former_cycle_members_import_first_in_a_fresh_interpreter(module):
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, timeout=120, cwd=PACKAGE.parent)

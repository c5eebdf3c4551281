"""The package's architecture, checked: layers import downwards only, no import
circles, and long modules say why they are long."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "movement"
MAX_LINES = 800
"""Above this a module must say at its top why it is one module (``Kept as one module``)."""

# What each layer may import from the project (besides itself and the top-level
# movement/__init__ and movement.protocol). The generator is the truth source of
# the tests and benchmarks, never of the analysis.
ALLOWED = {
    "analysis": {"analysis"},
    "report": {"analysis", "report"},
    "clinic": {"analysis", "report", "clinic"},
    "synth": {"analysis", "synth"},
    "consult": {"analysis", "report", "clinic"},
    # The batch engine drives consults; the clinic store is written by its client only.
    "batch": {"analysis", "report", "clinic", "consult", "batch"},
    # The recording page's server hands the recording to the consult's analysis and
    # checks camera frames with the analysis's own rules; nothing imports it but the CLI.
    "record": {"analysis", "consult", "record"},
    "cli": {"analysis", "report", "clinic", "synth", "consult", "batch", "record"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every project module ``name`` imports, at the top or inside a function."""
    found: set[str] = set()
    is_pkg = path.name == "__init__.py"
    base = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                root = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                mod = f"{root}.{mod}" if mod else root
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {n: _imports(p, n, set(mods)) for n, p in mods.items()}


def _layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


def test_layers_import_downwards_only():
    bad = []
    for mod, deps in _graph().items():
        layer = _layer(mod)
        if layer not in ALLOWED:
            continue
        for dep in deps:
            other = _layer(dep)
            if other in (None, "protocol") or other in ALLOWED[layer]:
                continue
            bad.append(f"{mod} -> {dep}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    graph = _graph()
    # The package roots only re-export; a module importing its own package's
    # __init__ is not a circle in the sense that matters here.
    roots = {m for m in graph if (PKG.parent / m.replace(".", "/") / "__init__.py").exists()}
    edges = {m: {d for d in ds if d not in roots} for m, ds in graph.items() if m not in roots}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_long_modules_say_why():
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text()
        n = text.count("\n")
        if n > MAX_LINES:
            head = ast.get_docstring(ast.parse(text)) or ""
            assert "Kept as one module" in head, (
                f"{path.relative_to(PKG.parent)} has {n} lines and no 'Kept as one module' "
                "reason in its docstring")


def test_public_entry_points_import_lazily():
    import subprocess
    import sys

    code = (
        "import sys, movement\n"
        "assert 'cv2' not in sys.modules and 'mediapipe' not in sys.modules\n"
        "from movement import analyze_to_folder, Session, StepResult, Options, load_protocol\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PKG.parent)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

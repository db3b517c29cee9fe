"""The package's layers, read from the imports: no import loop between modules, and no module
imports a layer above its own (reports -> workflow -> sampling -> transformer -> text -> codes ->
tokenizer -> metrics -> data -> core), and the reports import nothing of the workflow: a report reads
its spec, which the plan writes, never the plan. Imports inside functions count the same as those at
the top."""

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# top to bottom; a module may import its own layer and those below it
LAYERS = ["reports", "workflow", "sampling", "transformer", "text", "codes", "tokenizer", "metrics",
          "data", "core"]


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The drr modules `path` imports (``from drr.x import y`` counts as drr.x.y when that is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "drr"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "drr":
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in modules else node.module)
    return out


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in (REPO / "drr").rglob("*.py")}
    mods = set(paths)
    return {m: imports_of(p, mods) - {m} for m, p in paths.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_is_in_a_layer():
    assert [m for m in graph() if m != "drr" and layer(m) is None] == []


def test_no_import_up_the_layers():
    up = [f"{m} -> {t}" for m, ts in graph().items() for t in ts
          if layer(m) is not None and layer(t) is not None and layer(t) < layer(m)]
    assert up == []


# Pairs (importer, imported) of layers kept apart although the order above would allow the import.
APART = [("reports", "workflow")]


def test_no_import_between_layers_kept_apart():
    apart = [f"{m} -> {t}" for m, ts in graph().items() for t in ts
             if layer(m) is not None and layer(t) is not None
             and (LAYERS[layer(m)], LAYERS[layer(t)]) in APART]
    assert apart == []


def test_no_import_loop():
    g = graph()
    state: dict[str, int] = {}
    loops = []

    def visit(m, stack):
        state[m] = 1
        for t in sorted(g.get(m, ())):
            if t not in g:
                continue
            if state.get(t) == 1:
                loops.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert loops == []


@pytest.mark.parametrize("bad", ["drr.core.config -> drr.workflow.plan", "a loop",
                                 "drr.reports.tables -> drr.workflow.plan"])
def test_the_checks_see_a_violation(bad, monkeypatch):
    """The checks are not vacuous: an upward import, a loop and a report importing the workflow,
    planted in the graph, are found."""
    g = graph()
    if bad.startswith("drr.reports"):
        g["drr.reports.tables"] = g["drr.reports.tables"] | {"drr.workflow.plan"}
        monkeypatch.setattr(sys.modules[__name__], "graph", lambda: g)
        with pytest.raises(AssertionError):
            test_no_import_between_layers_kept_apart()
    elif bad == "a loop":
        g["drr.core.files"] = g["drr.core.files"] | {"drr.core.config"}
        monkeypatch.setattr(sys.modules[__name__], "graph", lambda: g)
        with pytest.raises(AssertionError):
            test_no_import_loop()
    else:
        g["drr.core.config"] = g["drr.core.config"] | {"drr.workflow.plan"}
        monkeypatch.setattr(sys.modules[__name__], "graph", lambda: g)
        with pytest.raises(AssertionError):
            test_no_import_up_the_layers()

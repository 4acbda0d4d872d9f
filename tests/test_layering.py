"""The import graph, read from the sources: no circles, no arrows from the engine to the app, the engine's core
free of Dask and of the web stack, and the speed machinery removable (only its interface imports it, lazily)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "app", "layouts", "benchmarks")  # installed as qcf_studio.engine, ... (symlinks in qcf_studio/)
WEB = ("panel", "holoviews", "bokeh")
DASK = ("dask", "distributed")
# the engine's modules that may import Dask: running fits on a cluster
ENGINE_DASK = {
    "qcf_studio.engine.run.distributed",
    "qcf_studio.engine.run.stream",
    "qcf_studio.engine.run.cluster",
    "qcf_studio.engine.campaign.driver",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] != "qcf_studio":
        parts.insert(0, "qcf_studio")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    return {"qcf_studio": ROOT / "qcf_studio" / "__init__.py", **found}


def _top_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules imported when ``name`` is imported: its module-level imports (not those inside functions, nor
    under ``if TYPE_CHECKING``), each with its parent packages, which Python imports first."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])

    visit(tree.body)
    with_parents = set()
    for mod in found:
        parts = mod.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    # (a module's own packages are being imported already when it is: no arrow back to them)
    own = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")) + 1)}
    return with_parents - own


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _top_level_imports(path, name, set(modules)) for name, path in modules.items()}


def _root(module: str) -> str:
    """The layer a module belongs to: ``engine``, ``app``, ``layouts``, ``benchmarks``, ``qcf_studio`` (the public
    API itself), or a third-party package's top-level name."""
    parts = module.split(".")
    if parts[0] == "qcf_studio" and len(parts) > 1 and parts[1] in PACKAGES:
        return parts[1]
    return parts[0]


def test_no_module_imports_itself_in_a_circle(graph):
    project = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in project[v]:
            if w not in index:
                strongconnect(w)
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
                circles.append(sorted(component))

    for v in sorted(project):
        if v not in index:
            strongconnect(v)
    assert circles == [], "\n".join(" ⇄ ".join(c) for c in circles)


def test_the_engine_imports_neither_the_app_nor_the_web_stack_and_its_core_no_dask(graph):
    engine = {m: deps for m, deps in graph.items() if _root(m) == "engine"}
    assert len(engine) > 40  # the sources were found
    outside = ("app", "layouts", "benchmarks", *WEB)
    wrong = {m: sorted(d for d in deps if _root(d) in outside) for m, deps in engine.items()}
    assert {m: d for m, d in wrong.items() if d} == {}
    dask = {m for m, deps in engine.items() if any(_root(d) in DASK for d in deps)}
    assert dask <= ENGINE_DASK


def test_only_the_accelerator_interface_reaches_the_speed_machinery(graph):
    outside = {m: deps for m, deps in graph.items() if not m.startswith("qcf_studio.engine.accel")}
    assert {m for m, deps in outside.items() if any(d.startswith("qcf_studio.engine.accel") for d in deps)} == set()
    source = (ROOT / "engine" / "gan" / "accelerator.py").read_text()
    assert "import qcf_studio.engine.accel" in source  # lazily, inside a function: the folder may be deleted


def test_benchmarks_and_layouts_do_not_reach_into_the_app(graph):
    reach = {m: sorted(d for d in deps if _root(d) == "app") for m, deps in graph.items() if _root(m) != "app"}
    assert {m: d for m, d in reach.items() if d} == {}


def test_nothing_in_the_project_imports_the_public_api(graph):
    # qcf_studio's own functions are the outermost layer (a thin re-export for users): the rest never depends on
    # them, only on the packages installed under its name (qcf_studio.engine, ...)
    reach = set()
    for name, path in _modules().items():
        if name == "qcf_studio":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name == "qcf_studio" for a in node.names):
                reach.add(name)
            if isinstance(node, ast.ImportFrom) and node.module == "qcf_studio":
                if any(a.name not in PACKAGES for a in node.names):
                    reach.add(name)
    assert len(graph) > 100 and reach == set()


def test_no_module_imports_the_old_top_level_names():
    # a stray `import engine` would load a second copy of the engine beside qcf_studio.engine (or a user's engine/)
    stray = set()
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n.split(".")[0] in PACKAGES for n in names):
                stray.add(name)
    assert stray == set()


# A worker-only install (no [dashboard] extra) has neither the web stack nor matplotlib: the headless commands (every
# command's parser, validate, schema, data, run, campaign, bench) and the Python API's headless functions reach
# neither, at import or in the functions they call. Commands that need them (serve, credentials, export) and the
# notebook views check first and name the extra (app.extras).
DASHBOARD = (*WEB, "matplotlib")
HEADLESS = (
    "qcf_studio.app.cli",
    "qcf_studio.app.cli.commands",
    "qcf_studio",
    "qcf_studio.app.notebook",
)  # imported for every command, or by users
# the modules whose functions run the headless commands: every import in them counts, lazy ones included
HEADLESS_CALLS = (
    "qcf_studio.app.cli.common",
    "qcf_studio.app.cli.run",
    "qcf_studio.app.cli.campaign",
    "qcf_studio.app.cli.progress",
)


def _imports_anywhere(name: str, known: set[str]) -> set[str]:
    """Everything ``name``'s source imports, inside functions too (absolute imports; the project uses no others)."""
    tree = ast.parse(_modules()[name].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
    return found


def _reached(graph: dict[str, set[str]], start: set[str]) -> set[str]:
    """``start`` and every module imported, at module level, when they are imported."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        mod = todo.pop()
        if mod not in seen:
            seen.add(mod)
            todo.extend(graph.get(mod, ()))
    return seen


def test_the_headless_commands_and_api_import_neither_the_web_stack_nor_matplotlib(graph):
    start = set(HEADLESS) | {m for m in graph if _root(m) in ("engine", "benchmarks")}
    for name in HEADLESS_CALLS:
        start |= {name} | _imports_anywhere(name, set(graph))
    reached = _reached(graph, start)
    assert {
        "qcf_studio.app.cli.run",
        "qcf_studio.app.cluster",
        "qcf_studio.engine.run.drive",
        "qcf_studio.engine.campaign.driver",
    } <= reached  # found them
    assert sorted(m for m in reached if _root(m) in DASHBOARD) == []
    gui = sorted(
        m for m in reached if m.startswith(("qcf_studio.app.dashboard.", "qcf_studio.app.export", "qcf_studio.layouts"))
    )
    assert gui == [
        "qcf_studio.app.dashboard.runs"
    ]  # the run control that qcf_studio.start shares with the dashboard: no Panel

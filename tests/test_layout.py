"""The layout (issue 13): every module imports on its own, no two modules import each other (directly or
round a longer loop, lazy imports included), and recipes never import each other."""
import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lorabench"


def modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        if "datasets" in p.relative_to(SRC).parts:
            continue
        name = ".".join(("lorabench",) + p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        out[name] = p
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """lorabench modules that `path` imports anywhere (top level or inside functions), except under
    `if TYPE_CHECKING:` (annotations only, never run)."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skip |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("lorabench"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; lorabench uses absolute imports")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
    return {m for m in found if m in known}



def cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every edge (a, b) of `graph` that lies on a cycle: a is reachable from b."""
    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen
    return sorted((a, b) for a in graph for b in graph[a] if a in reachable(b))

def test_no_import_cycles():
    mods = modules()
    graph = {m: imports(p, set(mods)) - {m} for m, p in mods.items()}
    graph["lorabench"] = set()  # its __init__ imports the API lazily (module __getattr__)

    assert cycles(graph) == []


def test_recipes_import_the_library_never_each_other():
    mods = modules()
    recipes = {m for m in mods if m.startswith("lorabench.recipes.")}
    for m in recipes:
        assert not (imports(mods[m], set(mods)) & (recipes - {m})), m


def test_every_module_imports_on_its_own():
    names = sorted(modules())
    script = ("import importlib, sys\nbad = []\nfor name in %r:\n"
              "    for m in [k for k in sys.modules if k == 'lorabench' or k.startswith('lorabench.')]:\n"
              "        del sys.modules[m]\n"
              "    try:\n        importlib.import_module(name)\n"
              "    except Exception as e:\n        bad.append(f'{name}: {e!r}')\nprint(bad)\n") % names
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr[-2000:]


# ------------------------------------------------------------------------------------- issue 23: layers
# Bottom to top; a package imports packages of its own layer or below, never above (counting imports inside
# functions). The library is every layer below `tracking`; recipes drive it, the CLI and the API wrap the recipes.
LAYERS = [
    {"_lazy", "errors", "console", "distributed", "quiet"},
    {"config"},
    {"data", "evaluation"},
    {"models", "speedups"},
    {"runs"},
    {"training", "planning"},
    {"inference", "reporting"},
    {"tracking"},
    {"pipeline"},
    {"recipes"},
    {"api", "cli", "__main__"},
]
LIBRARY = set().union(*LAYERS[:LAYERS.index({"tracking"})])
BACKENDS = {f"lorabench.tracking.{b}" for b in ("wandb", "mlflow", "tensorboard", "trackio")}


def package(module: str) -> str:
    return module.split(".")[1] if module != "lorabench" else ""


def package_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for m, p in mods.items():
        for target in imports(p, set(mods)):
            if package(m) != package(target) and package(target) and package(m):  # (lorabench/__init__: lazy)
                graph.setdefault(package(m), set()).add(package(target))
    return graph


def test_every_package_sits_in_one_layer():
    listed = set().union(*LAYERS)
    assert {package(m) for m in modules()} - {""} == listed


def test_no_package_level_import_cycle_counting_imports_inside_functions():
    assert cycles(package_graph()) == []


def test_packages_import_their_own_layer_or_below():
    layer = {pkg: i for i, pkgs in enumerate(LAYERS) for pkg in pkgs}
    upward = sorted((a, b) for a, bs in package_graph().items() for b in bs if layer[b] > layer[a])
    assert upward == [], "a package imports one of a higher layer: " + ", ".join(f"{a} -> {b}" for a, b in upward)


def test_the_library_never_imports_recipes_tracking_backends_or_the_cli():
    mods = modules()
    for m, p in mods.items():
        found = imports(p, set(mods))
        if package(m) in LIBRARY:
            assert not {t for t in found if package(t) in {"recipes", "tracking", "pipeline", "cli", "api"}}, m
        if not m.startswith("lorabench.tracking"):
            assert not found & BACKENDS, m  # a tracker backend is the tracking package's own business


def test_internal_imports_sit_at_the_top_of_modules():
    """The dependency graph is visible at the top of each module; imports inside functions only in the CLI (which
    loads a command's recipe only once its config is read) and for `speedups.cpu` (it imports torch)."""
    inside = []
    for m, p in modules().items():
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and sub.level == 0 and (sub.module or "").startswith("lorabench"):
                        if m != "lorabench.cli" and sub.module != "lorabench.speedups":
                            inside.append(f"{m}:{sub.lineno} {sub.module}")
    assert inside == []


def test_the_code_passes_ruff():
    """pyflakes (unused or undefined names), import order and syntax, as configured in pyproject.toml."""
    import shutil
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        import pytest
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    root = SRC.parents[1]
    p = subprocess.run([ruff, "check", "src", "tests", "benchmarks", "tools"], cwd=root, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-1000:]

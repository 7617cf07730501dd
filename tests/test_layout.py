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


def test_no_import_cycles():
    mods = modules()
    graph = {m: imports(p, set(mods)) - {m} for m, p in mods.items()}
    graph["lorabench"] = set()  # its __init__ imports the API lazily (module __getattr__)

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen
    cycles = sorted((a, b) for a in graph for b in graph[a] if a in reachable(b))
    assert cycles == []


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

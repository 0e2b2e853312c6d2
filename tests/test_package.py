"""The package as users meet it: every console script of pyproject.toml points at an importable,
callable ``main(argv=None)``, the scripts under tools/ import the installed project instead of
editing ``sys.path``, and the project's import graph has no cycle and points one way (downstream may
import pretrain, never the reverse)."""
import ast
import importlib
import inspect
import os

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomllib (3.11+) or tomli")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = ("pretrain", "downstream")
# Frameworks behind optional extras: a target that needs one is skipped, with the reason, when it is absent.
OPTIONAL = {"detectron2": "detectron2", "fvcore": "detectron2", "omegaconf": "detectron2",
            "mmengine": "segmentation/detection", "mmcv": "segmentation/detection", "mmseg": "segmentation",
            "mmdet": "detection", "pycocotools": "detection/detectron2", "matplotlib": "analysis",
            "scipy": "analysis"}
AGREED = {
    "vitmix-pretrain": "pretrain.train:main",
    "vitmix-mixmo-eval": "pretrain.mixmo.evaluate:main",
    "vitmix-analyze": "pretrain.analysis.cli:main",
    "vitmix-make-synthetic": "pretrain.synthetic.cli:main",
    "vitmix-make-label-maps": "pretrain.mixing.label_maps_cli:main",
    "vitmix-convert": "downstream.convert:main",
    "vitmix-train-d2": "downstream.detectron2.train:main",
    "vitmix-repro": "downstream.repro.cli:main",
}


def _pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


SCRIPTS = _pyproject()["project"].get("scripts", {})


def test_console_scripts_are_the_agreed_ones():
    assert SCRIPTS == AGREED


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_target_imports_and_is_callable(name):
    module_name, _, attr = SCRIPTS[name].partition(":")
    assert attr, f"{name}: target {SCRIPTS[name]!r} is not 'module:function'"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top in OPTIONAL:
            pytest.skip(f"{name}: {module_name} needs {top} (the '{OPTIONAL[top]}' extra), not installed")
        raise  # a missing project module (or a missing required dependency) is a broken entry point
    fn = getattr(module, attr, None)
    assert callable(fn), f"{name}: {module_name} has no callable {attr}"
    sig = inspect.signature(fn)
    sig.bind()        # the console script calls main() with no argument (argv from sys.argv)
    sig.bind([])      # and tests / other tools call main(argv)


def _sys_path_uses(path):
    """Lines of ``path`` (Python) that touch ``sys.path``; shell and other text files by substring."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if not path.endswith(".py"):
        return [i + 1 for i, line in enumerate(text.splitlines()) if "sys.path" in line]
    hits = []
    for node in ast.walk(ast.parse(text, path)):
        if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys"):
            hits.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            hits.append(node.lineno)
    return hits


def test_tools_do_not_edit_sys_path():
    """The project is installed (editable: pip install -e ., as tools/setup.sh does): tools import it."""
    bad = []
    for d, _, files in os.walk(os.path.join(REPO, "tools")):
        for f in sorted(files):
            if f.endswith((".py", ".sh")):
                p = os.path.join(d, f)
                bad += [f"{os.path.relpath(p, REPO)}:{n}" for n in _sys_path_uses(p)]
    assert not bad, "sys.path edits in tools/: " + ", ".join(bad)


def test_the_sys_path_check_sees_an_edit(tmp_path):
    p = tmp_path / "t.py"
    p.write_text("import sys, os\nsys.path.insert(0, os.getcwd())\nprint(sys.argv)\n")
    assert _sys_path_uses(str(p)) == [2]


# ------------------------------------------------------------------------------ import graph
def _module_files():
    """``{module name: path}`` of every module of the project's packages."""
    out = {}
    for pkg in PROJECT:
        for d, _, files in os.walk(os.path.join(REPO, pkg)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(d, f), REPO)[:-3].split(os.sep)
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    out[".".join(rel)] = os.path.join(d, f)
    return out


def _imports(name, path, modules):
    """Project modules ``name`` imports anywhere in its file (module level or inside functions). An import
    of a package from one of its own submodules (``from . import x``, re-exports) is not an edge."""
    is_pkg = path.endswith("__init__.py")
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here[: len(here) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def _graph():
    modules = _module_files()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycles(graph):
    """Every strongly connected set of more than one module (iterative Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]; counter[0] += 1; stack.append(root); on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop(); on.discard(w); comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycle_and_pretrain_never_imports_downstream():
    graph = _graph()
    assert len(graph) > 100 and "pretrain.checkpoint" in graph["downstream.weights"]  # the graph is read
    assert _cycles(graph) == []
    upward = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.startswith("pretrain") for t in ts
                    if t.startswith("downstream"))
    assert upward == [], "pretrain imports downstream: " + ", ".join(upward)


def test_the_cycle_check_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []

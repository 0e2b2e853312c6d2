"""The package as users meet it: every console script of pyproject.toml points at an importable,
callable ``main(argv=None)``, and the scripts under tools/ import the installed project instead of
editing ``sys.path``."""
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

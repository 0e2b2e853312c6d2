"""tools/gpu_validate.sh --borrowed (tools/gpu_validate_borrowed.py): the plan, the wheel unpacking, and the steps
run end to end at CPU sizes (--tiny) with their summary."""
import json
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gpu_validate_borrowed as gvb  # noqa: E402


def _wheel(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("carriedpkg/__init__.py", "VALUE = 42\n")
        z.writestr("carriedpkg-0.1.dist-info/METADATA", "Name: carriedpkg\nVersion: 0.1\n")


def test_dry_run_prints_every_step_within_the_budget(tmp_path):
    (tmp_path / "wheels").mkdir()
    _wheel(tmp_path / "wheels" / "carriedpkg-0.1-py3-none-any.whl")
    r = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_validate.sh"), "--borrowed", "--dry-run",
                        "--wheels", str(tmp_path / "wheels"), "--out", str(tmp_path / "out")],
                       env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    names = [line.split(" (<=")[0] for line in r.stdout.splitlines() if " (<= " in line]
    assert names == ["data", "smoke", "mixers_deit_s", "mixers_deit_b", "pretrain", "loader"]
    limits = [int(line.split("(<= ")[1].split(" s)")[0]) for line in r.stdout.splitlines() if " (<= " in line]
    assert sum(limits) <= 8 * 60
    assert "--batch 256" in r.stdout and "--batch 128" in r.stdout and "deit_base_patch16_224" in r.stdout
    assert "not downstream and not mmcv" in r.stdout and "unpack 1 wheels" in r.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_checks_judge_the_targets():
    mixers = {"rows": [{"mixer": "cutmix", "time_vs_cutmix": 1.0, "mem_vs_cutmix": 1.0},
                       {"mixer": "transmix", "time_vs_cutmix": 1.019, "mem_vs_cutmix": 1.06},
                       {"mixer": "tokenmix", "time_vs_cutmix": 1.031, "mem_vs_cutmix": 1.0}]}
    got = {c: ok for c, _, _, ok in gvb.checks_of("mixers_deit_s", mixers, tiny=False)}
    assert got == {"mixers_deit_s: transmix step time / CutMix": True, "mixers_deit_s: transmix peak memory / CutMix": False,
                   "mixers_deit_s: tokenmix step time / CutMix": False, "mixers_deit_s: tokenmix peak memory / CutMix": True}
    pre = {"results": [{"model": "m", "batch": 2, "variant": "engine, no mixing", "ratio": 0.99}]}
    assert [ok for *_, ok in gvb.checks_of("pretrain", pre, tiny=False)] == [False]
    assert [ok for *_, ok in gvb.checks_of("pretrain", pre, tiny=True)] == [None]


@pytest.mark.slow
def test_tiny_run_writes_the_summary(tmp_path):
    (tmp_path / "wheels").mkdir()
    _wheel(tmp_path / "wheels" / "carriedpkg-0.1-py3-none-any.whl")
    out = tmp_path / "out"
    rc = gvb.main(["--tiny", "--out", str(out), "--wheels", str(tmp_path / "wheels"), "--budget", "500"])
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == ["data", "smoke", "mixers_deit_s", "pretrain", "loader"]
    assert all(s["status"] == "ok" for s in summary["steps"]), [(s["name"], s["status"], s["tail"]) for s in summary["steps"]]
    assert rc == 0 and summary["failed"] == []
    assert (out / "pydeps" / "carriedpkg" / "__init__.py").exists() and summary["wheels"] == ["carriedpkg-0.1-py3-none-any.whl"]
    names = {c["check"] for c in summary["checks"]}
    assert "mixers_deit_s: transmix step time / CutMix" in names
    assert any(n.startswith("pretrain:") for n in names)
    md = (out / "summary.md").read_text()
    assert "| smoke | ok |" in md and "data.pipeline" in md and "img/s per core" in md
    pre = json.loads((out / "pretrain.json").read_text())
    assert {r.get("pipeline") for r in pre["results"] if "pipeline" in r} == {"timm", "fast", "fast_device", "gpu"}


def test_gpu_plan_calls_benchmarks_with_options_they_define(tmp_path):
    import argparse
    args = argparse.Namespace(tiny=False)
    for name, limit, cmd, _ in gvb.plan(args, str(tmp_path), "python3"):
        scripts = [c for c in cmd if c.startswith("tools/bench_")]
        if not scripts:
            continue
        text = open(os.path.join(ROOT, scripts[0])).read()
        for opt in (c for c in cmd if c.startswith("--")):
            assert f'"{opt}"' in text, (name, opt)

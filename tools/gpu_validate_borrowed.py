#!/usr/bin/env python
"""The short GPU check for a borrowed machine (``bash tools/gpu_validate.sh --borrowed``): no package index, the
machine's own python3 with torch (CUDA) and timm, no mmcv, at most about 8 minutes.

    bash tools/gpu_validate.sh --borrowed --wheels wheels/            # the check (GPU)
    bash tools/gpu_validate.sh --borrowed --dry-run                   # print the plan, run nothing
    python tools/gpu_validate_borrowed.py --tiny --out /tmp/check     # the same steps, tiny, on the CPU (tests)

``--wheels DIR``: pure-Python wheels carried to the machine (pytest and its dependencies at least: see
docs/benchmarks.md) are unpacked into ``OUT/pydeps`` and put on ``PYTHONPATH`` (with the project root) for every
step. Steps, each under its own time limit, all within ``--budget`` seconds (default 460; what a step does not use
is left to the later ones):

1. ``env``: python, torch, CUDA, device, timm, and which optional modules import (simplejpeg, pytest);
2. ``data``: the ImageNet-like JPEG set of the loader rows (:mod:`pretrain.synthetic.photolike`, 192 files);
3. ``smoke``: ``pytest -m gpu tests/test_gpu_smoke.py`` without the tests that need mmcv / MMSeg / MMDet /
   Detectron2 (the TransMix bf16/fp16 runs, the data paths on CUDA);
4. ``mixers_deit_s`` / ``mixers_deit_b``: ``tools/bench_mixers.py`` (CutMix, TransMix, TokenMix; DeiT-S batch 256,
   DeiT-B batch 128, bf16), checked: TransMix step time <= 1.02x CutMix, TokenMix <= 1.03x, peak memory <= 1.05x;
5. ``pretrain``: ``tools/bench_pretrain.py --preset gpu`` with loader rows for every ``data.pipeline`` (timm,
   fast, fast_device, gpu; 16 workers), checked: engine (no mixing) / bare timm >= 1.0;
6. ``loader``: ``tools/bench_loader.py``: per-core img/s of each data path's workers on this machine's CPU, and
   the device stages' time per image on the GPU.

Writes ``OUT/summary.json`` and ``OUT/summary.md`` (environment, each step's command, exit status, time and log,
the checks, and the benchmarks' tables) and one log and JSON per step. Exit status 0 when every step ran and
every check passed.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shlex
import subprocess
import sys
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_MMCV = "not downstream and not mmcv"  # test_gpu_smoke.py's tests that need no mmcv / MMSeg / MMDet / D2


def plan(args, out, py):
    """``[(name, limit_s, argv, json_path or None)]``."""
    data = os.path.join(out, "imagenet_like")
    mk = ("from pretrain.synthetic.photolike import write_imagenet_like; "
          f"print(write_imagenet_like({data!r}, num_classes=4, train_per_class={4 if args.tiny else 48}, "
          "val_per_class=1))")
    j = lambda n: os.path.join(out, f"{n}.json")  # noqa: E731
    mixers = "cutmix,transmix,tokenmix"
    if args.tiny:  # the same steps at CPU sizes: what tests/test_gpu_validate.py runs
        dev = ["--device", "cpu", "--amp", "none"]
        tiny_mix = ["--model", "deit_tiny_patch16_224", "--img-size", "32", "--patch-size", "8", "--batch", "8",
                    "--steps", "1", "--rounds", "1", "--mixers", mixers, "--classes", "10"]
        steps = [
            ("data", 60, [py, "-c", mk], None),
            ("smoke", 120, [py, "-m", "pytest", "-m", "gpu", "tests/test_gpu_smoke.py", "-k", NO_MMCV, "-q",
                            "-p", "no:cacheprovider"], None),
            ("mixers_deit_s", 120, [py, "tools/bench_mixers.py", *dev, *tiny_mix, "--json", j("mixers_deit_s")],
             j("mixers_deit_s")),
            ("pretrain", 180, [py, "tools/bench_pretrain.py", *dev, "--model", "deit_tiny_patch16_224", "--batch",
                               "8", "--img-size", "32", "--steps", "1", "--rounds", "1", "--warmup", "0",
                               "--data", data, "--workers", "0", "--loader-batches", "1", "--threads", "1",
                               "--json", j("pretrain")], j("pretrain")),
            ("loader", 120, [py, "tools/bench_loader.py", "--data", data, "--images", "4", "--batch", "4",
                             "--img-size", "64", "--device", "cpu", "--json", j("loader")], j("loader")),
        ]
        return steps
    dev = ["--device", "cuda", "--amp", "bf16"]
    return [
        ("data", 30, [py, "-c", mk], None),
        ("smoke", 150, [py, "-m", "pytest", "-m", "gpu", "tests/test_gpu_smoke.py", "-k", NO_MMCV, "-q", "-rs",
                        "-p", "no:cacheprovider"], None),
        ("mixers_deit_s", 50, [py, "tools/bench_mixers.py", *dev, "--model", "deit_small_patch16_224", "--batch",
                               "256", "--steps", "8", "--rounds", "3", "--mixers", mixers,
                               "--json", j("mixers_deit_s")], j("mixers_deit_s")),
        ("mixers_deit_b", 50, [py, "tools/bench_mixers.py", *dev, "--model", "deit_base_patch16_224", "--batch",
                               "128", "--steps", "8", "--rounds", "3", "--mixers", mixers,
                               "--json", j("mixers_deit_b")], j("mixers_deit_b")),
        ("pretrain", 150, [py, "tools/bench_pretrain.py", "--preset", "gpu", "--steps", "10", "--rounds", "3",
                           "--warmup", "3", "--data", data, "--workers", "16", "--loader-batches", "8",
                           "--json", j("pretrain")], j("pretrain")),
        ("loader", 30, [py, "tools/bench_loader.py", "--data", data, "--images", "64", "--device", "cuda",
                        "--json", j("loader")],
         j("loader")),
    ]


def unpack_wheels(wheels: str, dest: str):
    os.makedirs(dest, exist_ok=True)
    names = sorted(glob.glob(os.path.join(wheels, "*.whl")))
    for w in names:
        with zipfile.ZipFile(w) as z:
            z.extractall(dest)
    return [os.path.basename(w) for w in names]


def env_info(py, env):
    code = ("import json, platform, torch\n"
            "d = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda,\n"
            "     'cuda_available': torch.cuda.is_available()}\n"
            "d['device'] = torch.cuda.get_device_name(0) if d['cuda_available'] else 'cpu'\n"
            "for m in ('timm', 'torchvision', 'simplejpeg', 'pytest', 'mmcv'):\n"
            "    try:\n"
            "        d[m] = __import__(m).__version__\n"
            "    except Exception as exc:\n"
            "        d[m] = f'not importable ({type(exc).__name__})'\n"
            "print(json.dumps(d))\n")
    r = subprocess.run([py, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    return json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {"error": r.stderr[-2000:]}


def checks_of(name, data, tiny):
    """``[(check, value, limit, ok)]`` of a step's JSON."""
    out = []
    if name.startswith("mixers") and data:
        rows = {r["mixer"]: r for r in data["rows"]}
        for mixer, limit in (("transmix", 1.02), ("tokenmix", 1.03)):
            if mixer in rows:
                v = rows[mixer]["time_vs_cutmix"]
                out.append((f"{name}: {mixer} step time / CutMix", v, f"<= {limit}", v <= limit))
                m = rows[mixer]["mem_vs_cutmix"]
                out.append((f"{name}: {mixer} peak memory / CutMix", m, "<= 1.05", None if m is None else m <= 1.05))
    if name == "pretrain" and data:
        for r in data["results"]:
            if r.get("variant") == "engine, no mixing":
                out.append((f"pretrain: {r['model']} b{r['batch']} engine (no mixing) / bare timm", r["ratio"],
                            ">= 1.0", r["ratio"] >= 1.0))
    if tiny:  # CPU sizes say nothing about the GPU targets: record, do not judge
        out = [(c, v, lim, None) for c, v, lim, _ in out]
    return out


def tables_of(log_text):
    return "\n".join(line for line in log_text.splitlines() if line.startswith("|") or line.startswith("# "))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="output folder (default runs/gpu_validate/borrowed-<UTC time>)")
    ap.add_argument("--python", default=sys.executable, help="the python that runs every step")
    ap.add_argument("--wheels", default=None, help="folder of carried pure-Python wheels to unpack onto PYTHONPATH")
    ap.add_argument("--budget", type=float, default=460.0, help="seconds for all steps together")
    ap.add_argument("--tiny", action="store_true", help="the same steps at CPU sizes (tests)")
    ap.add_argument("--only", default=None, help="comma-separated step names")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = ap.parse_args(argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = os.path.abspath(args.out or os.path.join(ROOT, "runs", "gpu_validate", f"borrowed-{stamp}"))
    steps = plan(args, out, args.python)
    if args.only:
        keep = set(args.only.split(","))
        steps = [s for s in steps if s[0] in keep or s[0] == "data"]
    pydeps = os.path.join(out, "pydeps")
    path = [ROOT] + ([pydeps] if args.wheels else []) + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if args.dry_run:
        print(f"# gpu_validate --borrowed plan (budget {args.budget:.0f} s): output {out}")
        print(f"PYTHONPATH={os.pathsep.join(path)}")
        if args.wheels:
            print(f"unpack {len(glob.glob(os.path.join(args.wheels, '*.whl')))} wheels from {args.wheels} into {pydeps}")
        for name, limit, cmd, _ in steps:
            print(f"{name} (<= {limit} s): {shlex.join(cmd)}")
        return 0
    os.makedirs(out, exist_ok=True)
    wheels = unpack_wheels(args.wheels, pydeps) if args.wheels else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t_start = time.time()
    info = env_info(args.python, env)
    if not args.tiny and not info.get("cuda_available"):
        print(f"no CUDA device for {args.python}: {info}", file=sys.stderr)
        return 2
    results, checks = [], []
    for name, limit, cmd, jpath in steps:
        left = args.budget - (time.time() - t_start)
        if left < 10:
            results.append({"name": name, "cmd": cmd, "rc": None, "seconds": 0.0, "status": "not run (budget spent)"})
            continue
        limit = min(limit, left)
        log_path = os.path.join(out, f"{name}.log")
        t0 = time.time()
        print(f"[borrowed {time.strftime('%H:%M:%S')}] {name} (<= {limit:.0f} s): {shlex.join(cmd)}", flush=True)
        with open(log_path, "w") as logf:
            try:
                rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                    timeout=limit).returncode
                status = "ok" if rc == 0 else f"failed (exit {rc})"
            except subprocess.TimeoutExpired:
                rc, status = None, f"timed out after {limit:.0f} s"
        secs = time.time() - t0
        text = open(log_path).read()
        data = None
        if jpath and os.path.isfile(jpath):
            with open(jpath) as f:
                data = json.load(f)
        results.append({"name": name, "cmd": cmd, "rc": rc, "seconds": round(secs, 1), "status": status,
                        "log": log_path, "json": jpath if data else None, "tables": tables_of(text),
                        "tail": text[-1500:] if rc != 0 else ""})
        checks += [{"check": c, "value": v, "limit": lim, "ok": ok} for c, v, lim, ok in checks_of(name, data, args.tiny)]
        print(f"[borrowed] {name}: {status} in {secs:.0f} s", flush=True)
    total = time.time() - t_start
    failed = [r["name"] for r in results if r["status"] != "ok"] + [c["check"] for c in checks if c["ok"] is False]
    summary = {"date_utc": stamp, "mode": "tiny (CPU sizes)" if args.tiny else "gpu", "env": info,
               "wheels": wheels, "budget_s": args.budget, "total_s": round(total, 1), "steps": results,
               "checks": checks, "failed": failed}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    md = [f"# GPU check on a borrowed machine ({summary['mode']}), {stamp}", "",
          f"Device: {info.get('device')}; python {info.get('python')}, torch {info.get('torch')} (CUDA "
          f"{info.get('cuda')}), timm {info.get('timm')}, simplejpeg {info.get('simplejpeg')}, pytest "
          f"{info.get('pytest')}; carried wheels: {', '.join(wheels) or 'none'}. Total {total:.0f} s of "
          f"{args.budget:.0f} s.", "", "| step | status | seconds | command |", "|---|---|---|---|"]
    md += [f"| {r['name']} | {r['status']} | {r['seconds']} | `{shlex.join(r['cmd'][1:])}` |" for r in results]
    md += ["", "| check | value | target | pass |", "|---|---|---|---|"]
    for c in checks:
        v = "n/a" if c["value"] is None else f"{c['value']:.3f}"
        ok = "not judged" if c["ok"] is None else ("yes" if c["ok"] else "**no**")
        md.append(f"| {c['check']} | {v} | {c['limit']} | {ok} |")
    for r in results:
        if r.get("tables") or r.get("tail"):
            md += ["", f"## {r['name']}", "", r.get("tables") or "```\n" + r["tail"] + "\n```"]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print(f"[borrowed] summary: {out}/summary.md and summary.json; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

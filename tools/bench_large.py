#!/usr/bin/env python
"""Overhead of gradient accumulation and activation checkpointing against the plain engine step.

    python tools/bench_large.py                                   # DeiT-Ti, 224, batch 16, CPU
    python tools/bench_large.py --device cuda --amp bf16 --batch 256 --model deit_small_patch16_224

Every variant is :class:`pretrain.engine.step.TrainStep` on the classification objective with TransMix (the
CLS-attention tap on, so the tap's cost under checkpointing is in the figure), the same model weights and
batch, built side by side and timed in one run, interleaved in shuffled order over ``--rounds`` rounds of
``--steps`` steps (median round reported):

* ``plain``: one forward/backward of the whole batch (``train.accum_steps: 1``);
* ``accum k``: ``train.accum_steps: k`` (k micro-batches of batch / k);
* ``checkpointing``: ``train.grad_checkpointing: true`` (timm's ``set_grad_checkpointing``);
* ``checkpointing + accum k``.

Ratios are plain img/s over the variant's img/s (> 1 is slower than plain). On CUDA the peak allocated memory
of a step is reported too.

``--parallel``: DDP against FSDP2 (``train.parallel: fsdp``, :mod:`pretrain.engine.parallel`) with ``--procs``
processes (the tool relaunches itself under torchrun; gloo on CPU, NCCL on CUDA), the same TrainStep, weights
and batch per process, in one run::

    python tools/bench_large.py --parallel                        # DeiT-Ti 224, 2 CPU processes, batch 8 each
    python tools/bench_large.py --parallel --device cuda --amp bf16 --batch 64 --model vit_large_patch16_224

Per mode and process: the step time (both modes alive, interleaved in shuffled order, median round), the bytes
of parameters + gradients + optimizer state this process holds (local shards under FSDP), and the peak memory
of the steps: on CUDA ``torch.cuda.max_memory_allocated``, on CPU the peak resident set size of the process
(``VmHWM`` of ``/proc/self/status``) and its increase over the resident size before the model was built; each
mode alone in fresh processes (one torchrun launch per mode), then both timed in a third launch. The largest
value over the processes is printed, and FSDP / DDP ratios.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

import torch

from pretrain.engine.optim import build_optimizer
from pretrain.engine.step import TrainStep
from pretrain.mixing import build_mixer
from pretrain.models.vit import create_vit
from pretrain.objectives.classification import ClassificationObjective
from pretrain.amp import AMP_DTYPES


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved_times(fns: dict, x, y, rounds: int, steps: int, device, before=lambda: None) -> dict:
    """{name: [seconds per step of each round]}: every round runs each of ``fns`` for ``steps`` steps in a
    shuffled order (seeded, so the same on every rank), so that drift in machine load hits all alike."""
    times = {name: [] for name in fns}
    rng = random.Random(0)
    for _ in range(rounds):
        order = list(fns)
        rng.shuffle(order)
        for name in order:
            before()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                fns[name](x, y, None, lr=1e-4)
            _sync(device)
            times[name].append((time.perf_counter() - t0) / steps)
    return times


def build(model, k: int, ckpt: bool, device, amp_dtype, num_classes: int):
    model = copy.deepcopy(model).to(device)
    model.set_grad_checkpointing(ckpt)
    objective = ClassificationObjective(build_mixer({"name": "transmix"}, num_classes, seed=0)).to(device)
    objective.bind(model)
    opt = build_optimizer(model, {"name": "adamw", "weight_decay": 0.05, "betas": [0.9, 0.999], "eps": 1e-8},
                          1e-4, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainStep(model, model, objective, opt, scaler, amp_dtype, None, None, accum_steps=k)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="deit_tiny_patch16_224")
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--accum", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", choices=sorted(AMP_DTYPES))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--parallel", action="store_true", help="DDP vs FSDP at --procs processes (torchrun)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--phase", choices=("ddp", "fsdp", "time"), help=argparse.SUPPRESS)
    ap.add_argument("--phase-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phase:
        return parallel_phase(args)
    if args.parallel:
        return parallel_main(args, argv if argv is not None else sys.argv[1:])
    device, amp_dtype = torch.device(args.device), AMP_DTYPES[args.amp]
    torch.manual_seed(0)
    base = create_vit(args.model, 1000, img_size=args.img)
    variants = {"plain": (1, False)}
    variants.update({f"accum {k}": (k, False) for k in args.accum})
    variants["checkpointing"] = (1, True)
    variants.update({f"checkpointing + accum {k}": (k, True) for k in args.accum})
    steps = {name: build(base, k, c, device, amp_dtype, 1000) for name, (k, c) in variants.items()}
    x = torch.randn(args.batch, 3, args.img, args.img, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    peak = {}
    for name, fn in steps.items():
        for _ in range(args.warmup):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            fn(x, y, None, lr=1e-4)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated() / 2 ** 20
    times = interleaved_times(steps, x, y, args.rounds, args.steps, device)
    ips = {name: args.batch / statistics.median(t) for name, t in times.items()}
    rows = [{"variant": n, "img_per_s": round(ips[n], 2), "slowdown_vs_plain": round(ips["plain"] / ips[n], 3),
             **({"peak_mib": round(peak[n], 1)} if n in peak else {})} for n in steps]
    print(f"{args.model} {args.img}px batch {args.batch} {args.device} amp {args.amp} threads "
          f"{torch.get_num_threads()}, median of {args.rounds} x {args.steps} steps")
    for r in rows:
        print(f"  {r['variant']:<26} {r['img_per_s']:8.2f} img/s  x{r['slowdown_vs_plain']:.3f}"
              + (f"  peak {r['peak_mib']} MiB" if "peak_mib" in r else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "torch": torch.__version__, "host": platform.node(),
                       "time": datetime.datetime.now(datetime.timezone.utc).isoformat()}, f, indent=2)
    return rows


# ---- --parallel: DDP vs FSDP -----------------------------------------------------------------------------
def _local_bytes(t) -> int:
    t = t.to_local() if hasattr(t, "to_local") else t  # a DTensor: this process's shard
    return t.numel() * t.element_size()


def state_bytes(model, optimizer) -> dict:
    """Bytes of parameters, gradients and optimizer state held by this process."""
    params = list(model.parameters())
    return {"params": sum(_local_bytes(q) for q in params),
            "grads": sum(_local_bytes(q.grad) for q in params if q.grad is not None),
            "optim": sum(_local_bytes(v) for st in optimizer.state.values() for v in st.values()
                         if torch.is_tensor(v))}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def build_parallel(base, mode: str, device, amp_dtype, world: int, num_classes: int):
    from pretrain.engine.parallel import Parallel
    par = Parallel(mode, device, world, amp_dtype)
    model = copy.deepcopy(base).to(device)
    model = par.shard(model) if mode == "fsdp" else model
    net = par.wrap(model)
    objective = ClassificationObjective(build_mixer({"name": "transmix"}, num_classes, seed=0)).to(device)
    objective.bind(model)
    opt = build_optimizer(model, {"name": "adamw", "weight_decay": 0.05, "betas": [0.9, 0.999], "eps": 1e-8},
                          1e-4, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return model, opt, TrainStep(model, net, objective, opt, scaler, amp_dtype, 1.0, None)


def parallel_main(args, argv) -> list:
    """DDP vs FSDP at ``args.procs`` processes: three torchrun launches (the peak memory of each mode alone in
    fresh processes, then both modes timed side by side); prints the table and returns its rows."""
    import tempfile
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for phase in ("ddp", "fsdp", "time"):
            out = os.path.join(tmp, f"{phase}.json")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                   f"--nproc-per-node={args.procs}", os.path.abspath(__file__), *argv, "--phase", phase,
                   "--phase-out", out]
            if subprocess.call(cmd, env=env) != 0:
                raise SystemExit(f"bench_large.py --parallel: the {phase} phase failed")
            with open(out) as f:
                results[phase] = json.load(f)
    device = torch.device(args.device)
    peak_key = "peak_cuda_mib" if device.type == "cuda" else "peak_rss_mib"
    rows = []
    for mode in ("ddp", "fsdp"):
        per_rank = results[mode]
        worst = lambda key: max(r[key] for r in per_rank)  # noqa: E731
        rows.append({"mode": mode, "step_s": round(max(r[mode] for r in results["time"]), 4),
                     "params_mib": round(worst("params") / 2 ** 20, 2), "grads_mib": round(worst("grads") / 2 ** 20, 2),
                     "optim_mib": round(worst("optim") / 2 ** 20, 2),
                     "state_mib": round(max(r["params"] + r["grads"] + r["optim"] for r in per_rank) / 2 ** 20, 2),
                     "peak_rss_mib": round(worst("peak_rss_mib"), 1),
                     "peak_rss_over_start_mib": round(worst("peak_rss_over_start_mib"), 1),
                     **({"peak_cuda_mib": round(worst("peak_cuda_mib"), 1)} if device.type == "cuda" else {})})
    d, f = rows
    ratios = {"step_time": round(f["step_s"] / d["step_s"], 3), "state": round(f["state_mib"] / d["state_mib"], 3),
              "peak": round(f[peak_key] / d[peak_key], 3)}
    if device.type == "cpu":
        ratios["peak_over_start"] = round(f["peak_rss_over_start_mib"] / d["peak_rss_over_start_mib"], 3)
    print(f"{args.model} {args.img}px batch {args.batch}/process x {args.procs} processes {device.type} amp "
          f"{args.amp}, 1 thread per process, median of {args.rounds} x {args.steps} steps, max over processes")
    for r in rows:
        print(f"  {r['mode']:<5} step {r['step_s']:.3f} s  params+grads+optimizer {r['state_mib']:.1f} MiB "
              f"({r['params_mib']:.1f} + {r['grads_mib']:.1f} + {r['optim_mib']:.1f})  peak RSS {r['peak_rss_mib']} "
              f"MiB ({r['peak_rss_over_start_mib']} above the RSS before the model was built)"
              + (f"  peak CUDA allocated {r['peak_cuda_mib']} MiB" if device.type == "cuda" else ""))
    print("  fsdp / ddp: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows, "ratios": ratios, "torch": torch.__version__,
                       "host": platform.node(), "time": datetime.datetime.now(datetime.timezone.utc).isoformat()},
                      fh, indent=2)
    return rows


def parallel_phase(args) -> None:
    """One torchrun launch of :func:`parallel_main`: ``--phase ddp|fsdp`` (that mode alone: state bytes and
    peak memory of ``--steps`` steps after a first one) or ``time`` (both modes, interleaved rounds)."""
    from pretrain import dist as du
    torch.set_num_threads(1)
    rank, world, device = du.init_distributed()
    amp_dtype = AMP_DTYPES[args.amp]
    start_rss = _rss_kib("VmRSS")
    torch.manual_seed(0)
    base = create_vit(args.model, 1000, img_size=args.img)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, 3, args.img, args.img, generator=g).to(device)
    y = torch.randint(0, 1000, (args.batch,), generator=g).to(device)
    if args.phase in ("ddp", "fsdp"):
        model, opt, step = build_parallel(base, args.phase, device, amp_dtype, world, 1000)
        del base
        gc.collect()
        step(x, y, None, lr=1e-4)  # the optimizer state exists after the first step
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.steps):
            step(x, y, None, lr=1e-4)
        rec = {**state_bytes(model, opt), "peak_rss_mib": _rss_kib("VmHWM") / 1024,
               "peak_rss_over_start_mib": (_rss_kib("VmHWM") - start_rss) / 1024}
        if device.type == "cuda":
            torch.cuda.synchronize()
            rec["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        modes = ("ddp", "fsdp")
        built = {mode: build_parallel(base, mode, device, amp_dtype, world, 1000)[2] for mode in modes}
        for fn in built.values():
            for _ in range(args.warmup):
                fn(x, y, None, lr=1e-4)
        # the same order on every rank (the steps are collectives), each timing started together
        times = interleaved_times(built, x, y, args.rounds, args.steps, device, before=du.barrier)
        rec = {m: statistics.median(t) for m, t in times.items()}
    per_rank = du.gather_objects(rec)
    if rank == 0:
        with open(args.phase_out, "w") as f:
            json.dump(per_rank, f)
    du.cleanup()


if __name__ == "__main__":
    main()

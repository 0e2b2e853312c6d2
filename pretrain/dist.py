"""Distributed helpers over torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), or
SLURM's when torchrun's is absent (``srun python -m pretrain.train ...``, one task per GPU).

Shared by the training engine, the objectives' evaluations and MixMo's evaluation (beside
:mod:`pretrain.amp`, so that no method package imports the engine). The collectives are no-ops in one
process.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Tuple

import torch
import torch.distributed as dist

DEFAULT_PORT = 29500
# torchrun's variables, and the SLURM variables each one is read from when torchrun's are absent
SLURM_NAMES = {"RANK": ("SLURM_PROCID",), "WORLD_SIZE": ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"),
               "LOCAL_RANK": ("SLURM_LOCALID",)}
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def expand_nodelist(nodelist: str) -> List[str]:
    """The host names of a SLURM node list, in order: ``"node[01-03,07],gpu5"`` -> node01, node02, node03,
    node07, gpu5 (zero padding as written; several bracket groups in one name give every combination,
    ``"r[1-2]n[1-2]"`` -> r1n1, r1n2, r2n1, r2n2). What ``scontrol show hostnames`` prints, without scontrol.
    A malformed list is a :class:`ValueError` naming it."""
    out: List[str] = []
    for item in _split_top(nodelist.strip(), nodelist):
        names = [""]
        rest = item
        while rest:
            if rest[0] == "[":
                end = rest.find("]")
                if end < 0:
                    raise ValueError(f"SLURM node list {nodelist!r}: '[' without ']'")
                names = [n + s for n in names for s in _expand_ranges(rest[1:end], nodelist)]
                rest = rest[end + 1:]
            else:
                cut = rest.find("[")
                text = rest if cut < 0 else rest[:cut]
                if "]" in text:
                    raise ValueError(f"SLURM node list {nodelist!r}: ']' without '['")
                names = [n + text for n in names]
                rest = "" if cut < 0 else rest[cut:]
        out.extend(names)
    return out


def _split_top(text: str, whole: str) -> List[str]:
    """``text`` split at the commas outside brackets (empty items are an error)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"SLURM node list {whole!r}: nested '['")
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    if any(not x.strip() for x in items):
        raise ValueError(f"SLURM node list {whole!r}: an empty host name")
    return [x.strip() for x in items]


def _expand_ranges(spec: str, whole: str) -> List[str]:
    out = []
    for part in spec.split(","):
        m = _RANGE.match(part.strip())
        if not m:
            raise ValueError(f"SLURM node list {whole!r}: {part!r} is not a number or a range a-b")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise ValueError(f"SLURM node list {whole!r}: the range {part!r} goes down")
        width = len(lo)
        out.extend(str(v).zfill(width) for v in range(int(lo), int(hi) + 1))
    return out


def slurm_env(env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) that SLURM's give,
    for those not set already: {} outside a SLURM task, or when torchrun's RANK or WORLD_SIZE is set
    (torchrun under srun: torchrun's win). MASTER_ADDR is the first host of the step's (or job's) node list,
    where task 0 runs; MASTER_PORT is 29500 + the job id modulo 1000 (two jobs sharing a node get different
    ports), 29500 without a job id."""
    env = os.environ if env is None else env
    if "RANK" in env or "WORLD_SIZE" in env or "SLURM_PROCID" not in env:
        return {}
    out = {}
    for name, sources in SLURM_NAMES.items():
        value = next((env[s] for s in sources if env.get(s)), None)
        if value is not None and name not in env:
            out[name] = value
    if "WORLD_SIZE" not in out or "RANK" not in out:
        return {}
    for name, value in out.items():
        if not value.strip().isdigit():
            raise ValueError(f"SLURM gives {name}={value!r}: not a whole number")
    if "MASTER_ADDR" not in env:
        nodelist = next((env[s] for s in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
                         if env.get(s)), None)
        if nodelist is None:
            if int(out["WORLD_SIZE"]) > 1:
                raise ValueError("SLURM task without SLURM_JOB_NODELIST: set MASTER_ADDR to the host of task 0")
            out["MASTER_ADDR"] = "127.0.0.1"
        else:
            out["MASTER_ADDR"] = expand_nodelist(nodelist)[0]
    if "MASTER_PORT" not in env:
        job = env.get("SLURM_JOB_ID", "")
        out["MASTER_PORT"] = str(DEFAULT_PORT + int(job) % 1000 if job.isdigit() else DEFAULT_PORT)
    return out


def adopt_slurm_env(env: Optional[MutableMapping[str, str]] = None) -> Dict[str, str]:
    """Set :func:`slurm_env`'s variables in ``env`` (the process environment); returns what was set."""
    env = os.environ if env is None else env
    found = slurm_env(env)
    env.update(found)
    return found


def init_distributed() -> Tuple[int, int, torch.device]:
    """(rank, world_size, device). One process per GPU (``LOCAL_RANK``) on CUDA; gloo on CPU. Under SLURM
    without torchrun, SLURM's variables stand in for torchrun's (:func:`slurm_env`), and a task that sees
    one GPU (SLURM bound it) uses that one."""
    from_slurm = adopt_slurm_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        index = local
        if local >= torch.cuda.device_count():
            if not (from_slurm and torch.cuda.device_count() == 1):
                raise RuntimeError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible")
            index = 0  # SLURM bound one GPU to this task (--gpus-per-task=1, --gpu-bind)
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        store = _restarted_group_store(rank, world)
        extra = {} if store is None else {"store": store, "rank": rank, "world_size": world}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device
                                if device.type == "cuda" else None, **extra)
    return rank, world, device


STATIC_RDZV_ENV = "VITMIX_STATIC_RDZV"  # set by pretrain.engine.launch under torchrun's static rendezvous


def _restarted_group_store(rank: int, world: int):
    """None (torchrun's store as it comes), or for a worker group that torchrun restarted under its static
    rendezvous, that store under a prefix of this restart: the static rendezvous keeps one store for the whole
    job, and the peer addresses the previous group left in it would otherwise be read by the new group
    (which then fails to connect, or hangs). Every node's restart count agrees there (no membership
    changes). Dynamic rendezvous (c10d) get a fresh store per group from the launcher instead
    (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``)."""
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if not restart or os.environ.get(STATIC_RDZV_ENV) != "1":
        return None
    from datetime import timedelta
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                         is_master=rank == 0 and not agent_store, timeout=timedelta(minutes=30))
    return dist.PrefixStore(f"vitmix/restart{restart}", base)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(values, device) -> List[float]:
    """Element-wise sum over ranks of a list of numbers (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if is_dist():
        dist.all_reduce(t)
    return t.tolist()


def all_reduce_max_(t: torch.Tensor) -> torch.Tensor:
    """In-place element-wise max over ranks (a no-op in one process)."""
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj`` in rank order (a one-element list in one process)."""
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()

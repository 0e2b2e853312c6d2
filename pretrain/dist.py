"""Distributed helpers over torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

Shared by the training engine, the objectives' evaluations and MixMo's evaluation (beside
:mod:`pretrain.amp`, so that no method package imports the engine). The collectives are no-ops in one
process.
"""
from __future__ import annotations

import os
from typing import Any, List, Tuple

import torch
import torch.distributed as dist


def init_distributed() -> Tuple[int, int, torch.device]:
    """(rank, world_size, device). One process per GPU (``LOCAL_RANK``) on CUDA; gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device
                                if device.type == "cuda" else None)
    return rank, world, device


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

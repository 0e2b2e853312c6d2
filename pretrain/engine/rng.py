"""Global generators of a training process: seeding, their states for exact resume, deterministic kernels.

Each rank seeds Python, NumPy and torch with ``train.seed + rank``; a resume checkpoint keeps every rank's
:func:`rng_state` (the objective's and the loaders' own generators are saved or derived separately).
"""
from __future__ import annotations

import os
import random
from typing import Any, Dict

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's (CPU and every CUDA device) generators."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> Dict[str, Any]:
    """This process's Python, NumPy (global), torch CPU and CUDA generator states (plain data + tensors)."""
    np_state = np.random.get_state(legacy=False)
    np_state = {**np_state, "state": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                                      "pos": int(np_state["state"]["pos"])}}
    out = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` gave (the CUDA state only on a CUDA device)."""
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": state["numpy"]["state"]["key"].numpy().astype(np.uint32),
                         "pos": int(state["numpy"]["state"]["pos"])}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def set_deterministic(on: bool) -> None:
    """Deterministic kernels (resume tests, debugging) or the fastest ones (cuDNN autotune, TF32)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on
    torch.backends.cuda.matmul.allow_tf32 = not on
    torch.backends.cudnn.allow_tf32 = not on

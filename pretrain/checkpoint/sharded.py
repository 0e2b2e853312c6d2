"""Sharded resume state through ``torch.distributed.checkpoint`` (DCP), for FSDP runs (``train.parallel: fsdp``).

A FSDP resume checkpoint keeps the layout of :mod:`.resume` (``checkpoints/step_N/`` with ``state.pt``, the full
``model.safetensors`` / ``ema.safetensors`` and ``manifest.json``) and adds ``sharded/``: the model, the
optimizer and the EMA as DCP writes them, one ``__<rank>_0.distcp`` file per rank plus ``.metadata``
(``FileSystemWriter(sync_files=True)``: each file fsynced; DCP writes ``.metadata`` under a temporary name and
renames it). The files are listed in the manifest with their sha256 like every other file, so a damaged shard
is found before anything is loaded and ``--resume auto`` falls back to the previous checkpoint.

* :func:`sharded_state`: ``{"model", "optim", "ema"}`` state dicts from
  ``torch.distributed.checkpoint.state_dict.get_state_dict`` / ``get_model_state_dict`` (DTensor shards under
  FSDP2, plain tensors for an unsharded model; optimizer state keyed by parameter name, not position);
* :func:`save_sharded` / :func:`load_sharded` [collective]: ``dcp.save`` / ``dcp.load`` then ``set_state_dict``
  (DCP reshards on load, so a checkpoint of N processes loads into M, or into an unsharded model);
* :func:`full_weights` [collective]: the unsharded model state dict on rank 0's CPU (``StateDictOptions(
  full_state_dict=True, cpu_offload=True)``), the canonical timm layout a DDP run writes.

API: https://pytorch.org/docs/stable/distributed.checkpoint.html (``save``, ``load``, ``FileSystemWriter``,
``state_dict.get_state_dict``, ``set_state_dict``, ``StateDictOptions``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

__all__ = ["SHARDED", "sharded_state", "save_sharded", "load_sharded", "full_weights"]

SHARDED = "sharded"  # the DCP subfolder of a checkpoint folder


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, ema: Optional[nn.Module] = None
                  ) -> Dict[str, Any]:
    """The DCP state of a run: ``model`` and ``optim`` (``get_state_dict``; a fresh optimizer gets its state
    initialised by a zero-lr step first, which leaves the weights as they are), ``ema`` (the EMA module's)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict
    msd, osd = get_state_dict(model, optimizer)
    state: Dict[str, Any] = {"model": msd, "optim": osd}
    if ema is not None:
        state["ema"] = get_model_state_dict(ema)
    return state


def save_sharded(folder: str, model: nn.Module, optimizer, ema: Optional[nn.Module] = None) -> None:
    """Every rank writes its shards of model, optimizer and EMA into ``folder`` (created) [collective]."""
    import torch.distributed.checkpoint as dcp
    os.makedirs(folder, exist_ok=True)
    dcp.save(sharded_state(model, optimizer, ema),
             storage_writer=dcp.FileSystemWriter(folder, sync_files=True, overwrite=False))


def load_sharded(folder: str, model: nn.Module, optimizer, ema: Optional[nn.Module] = None) -> None:
    """Load what :func:`save_sharded` wrote into model, optimizer and EMA [collective]. ValueError naming
    the folder when it does not hold this run's tensors (another architecture, no EMA)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict
    state = sharded_state(model, optimizer, ema)
    try:
        dcp.load(state, storage_reader=dcp.FileSystemReader(folder))
    except Exception as exc:  # noqa: BLE001 - DCP raises CheckpointException / RuntimeError per rank
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
        raise ValueError(f"cannot load the sharded state in {folder}: {'; '.join(lines[:3])[:400]}") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    if ema is not None:
        set_model_state_dict(ema, state["ema"])


def full_weights(module: nn.Module) -> Dict[str, torch.Tensor]:
    """The unsharded state dict of ``module`` on rank 0 (CPU, contiguous; an empty dict on the other ranks)
    [collective under FSDP]; the module's own state dict, on the CPU, when it is not sharded."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    sd = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.contiguous() for k, v in sd.items()}

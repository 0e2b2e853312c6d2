"""Data parallelism of the engine: DDP (the default) or FSDP2 (``torch.distributed.fsdp.fully_shard``).

``train.parallel: ddp`` wraps the model in ``DistributedDataParallel`` as every earlier run did (one full copy of
weights, gradients and optimizer state per process). ``train.parallel: fsdp`` shards them instead: each
transformer block (timm ViT/DeiT ``blocks``, XCiT ``blocks`` and ``cls_attn_blocks``, CaiT ``blocks`` and
``blocks_token_only``, Swin/CA-Swin stages ``layers`` and the class-attention blocks) becomes one FSDP unit,
then the root (patch embedding, tokens, norm, head), as the FSDP2 docs prescribe ("fully_shard ... should be
called bottom-up, on submodules before the root", torch.distributed.fsdp.fully_shard). The module is changed in
place: its parameters become ``DTensor`` shards (dim 0 over the ranks), its state-dict keys stay timm's, and the
same object serves as ``model`` (EMA, taps, evaluation, checkpoints) and ``net`` (the training forward).

Mixed precision: with ``train.amp`` bf16/fp16 the FSDP units gather their parameters in that dtype and reduce
the gradients in float32 (``MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=float32)``); the sharded
master weights and the optimizer state stay float32. The engine's autocast stays on around the forward as under
DDP, so softmax, layer norm and the loss run in float32 the same way.

``train.fsdp_reshard_after_forward`` (default true) frees a unit's gathered parameters after its forward and
gathers them again in backward (ZeRO-3); false keeps them until backward (fewer all-gathers, more memory).

FSDP runs on CPU with gloo too (all-gather and reduce-scatter are gloo collectives in torch 2.14's
``_fsdp_collectives``), which is how the tests run it: ``tests/test_fsdp.py``.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
from typing import Iterator, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from .. import dist as du

log = logging.getLogger("pretrain")

MODES = ("ddp", "fsdp")
# the containers of transformer blocks / stages, by timm family (see pretrain.models.taps)
UNIT_CONTAINERS = ("blocks", "layers", "cls_attn_blocks", "blocks_token_only")


def check_mode(mode) -> str:
    if mode not in MODES:
        raise ValueError(f"train.parallel must be ddp|fsdp, got {mode!r}")
    return mode


def shard_units(model: nn.Module) -> List[nn.Module]:
    """The submodules FSDP shards one by one: the children of the model's block / stage containers."""
    units: List[nn.Module] = []
    for name in UNIT_CONTAINERS:
        seq = getattr(model, name, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)):
            units.extend(seq)
    return units


def broadcast_module(model: nn.Module, src: int = 0) -> None:
    """Rank ``src``'s parameters and buffers on every rank (what DDP's constructor does), so the shards FSDP
    cuts from each rank's copy form rank 0's model: every rank initialised its own from ``seed + rank``."""
    if not du.is_dist():
        return
    with torch.no_grad():
        for t in itertools.chain(model.parameters(), model.buffers()):
            dist.broadcast(t.data, src)


class Parallel:
    """The run's parallel mode and what depends on it.

    Args:
        mode: ``ddp`` or ``fsdp`` (``train.parallel``).
        device, world: this process's device, the number of processes.
        amp_dtype: ``train.amp``'s dtype (None: float32), FSDP's parameter dtype.
        reshard_after_forward: ``train.fsdp_reshard_after_forward``.
        sample_shape: (C, H, W) of a validation sample (the blank forwards of :class:`BalancedLoader`).
    """

    def __init__(self, mode: str, device: torch.device, world: int, amp_dtype: Optional[torch.dtype] = None,
                 reshard_after_forward: bool = True, sample_shape=(3, 224, 224)):
        self.mode = check_mode(mode)
        self.device, self.world, self.amp_dtype = device, int(world), amp_dtype
        self.reshard_after_forward = bool(reshard_after_forward)
        self.sample_shape = tuple(sample_shape)
        self._mesh = None
        self._units = 0

    @property
    def fsdp(self) -> bool:
        return self.mode == "fsdp"

    @property
    def sharded(self) -> bool:
        """True when the parameters are DTensor shards (FSDP with more than one process)."""
        return self.fsdp and self.world > 1 and du.is_dist()

    # ---- wrapping --------------------------------------------------------------------------------
    def shard(self, module: nn.Module) -> nn.Module:
        """FSDP: ``fully_shard`` each unit of :func:`shard_units`, then the root, in place (rank 0's weights,
        :func:`broadcast_module`); returns the module. One process: unchanged (nothing to shard)."""
        if not self.sharded:
            return module
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        if self._mesh is None:
            self._mesh = init_device_mesh(self.device.type, (self.world,))
        broadcast_module(module)
        mp = MixedPrecisionPolicy(param_dtype=self.amp_dtype, reduce_dtype=torch.float32) \
            if self.amp_dtype is not None else MixedPrecisionPolicy()
        kw = dict(mesh=self._mesh, mp_policy=mp, reshard_after_forward=self.reshard_after_forward)
        units = shard_units(module)
        for unit in units:
            fully_shard(unit, **kw)
        fully_shard(module, **kw)
        self._units = len(units)
        return module

    def wrap(self, model: nn.Module) -> nn.Module:
        """What runs the training forward: DDP around the model (more than one process), or the (already
        sharded) FSDP model itself."""
        if self.fsdp or self.world <= 1:
            return model
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # ---- evaluation ------------------------------------------------------------------------------
    def eval_loader(self, loader, module: nn.Module):
        """The validation loader as the evaluation of ``module`` should iterate it: unchanged under DDP; under
        FSDP :class:`BalancedLoader` (every rank runs the same number of forward passes)."""
        if not self.sharded:
            return loader
        return BalancedLoader(loader, module, self.sample_shape, self.device)

    def describe(self) -> str:
        if not self.fsdp:
            return "ddp" if self.world > 1 else "single process"
        if not self.sharded:
            return "fsdp (one process: unsharded)"
        return (f"fsdp over {self.world} processes, {self._units} units + root, params "
                f"{self.amp_dtype or torch.float32}, reduce float32, reshard_after_forward "
                f"{self.reshard_after_forward}")


class BalancedLoader:
    """A validation loader whose ranks all run the same number of forward passes of ``module``.

    FSDP gathers every unit's parameters in each forward, a collective: a rank that runs one forward fewer
    than the others (the validation split rarely divides by the number of processes, and a batch of only
    unreadable images is skipped) would leave them waiting. This rank runs a forward of one blank sample in
    place of each skipped (None) batch and, after its last batch, as many as the longest rank has more
    batches; the outputs are dropped, so the evaluation's sums are unchanged.
    """

    def __init__(self, loader, module: nn.Module, sample_shape, device: torch.device):
        self.loader, self.module, self.device = loader, module, device
        self.sample_shape = tuple(sample_shape)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):  # dataset, batch_size, sampler ...: the loader's
        if name in ("loader", "module", "device", "sample_shape"):
            raise AttributeError(name)
        return getattr(self.loader, name)

    @torch.no_grad()
    def _blank_forward(self) -> None:
        self.module(torch.zeros((1, *self.sample_shape), device=self.device))

    def __iter__(self) -> Iterator:
        mine = len(self.loader)
        most = int(du.all_reduce_max_(torch.tensor([float(mine)], device=self.device)).item())
        for batch in self.loader:
            if batch is None:
                self._blank_forward()
            yield batch
        for _ in range(most - mine):
            self._blank_forward()


def gradient_sync(net, last: bool):
    """Context of one micro-batch of gradient accumulation: DDP's ``no_sync`` on all but the last; FSDP2's
    ``set_requires_gradient_sync(last)`` (no reduce-scatter until the last micro-batch, the FSDPModule
    API); nothing for an unwrapped model."""
    set_sync = getattr(net, "set_requires_gradient_sync", None)
    if set_sync is not None:
        set_sync(last)
        return contextlib.nullcontext()
    no_sync = getattr(net, "no_sync", None)
    if no_sync is not None and not last:
        return no_sync()
    return contextlib.nullcontext()


def full_value(t):
    """A DTensor (FSDP's clip_grad_norm_ result, Replicate) as a plain tensor; anything else unchanged."""
    full = getattr(t, "full_tensor", None)
    return full() if full is not None else t


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (itself in one process)."""
    if not du.is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]

"""The objective interface: what the training engine knows of a training method.

The engine (:mod:`pretrain.engine.train`) owns the run: processes, data order, optimizer and schedule,
autocast, the non-finite check, EMA, checkpoints, exact resume, logs and signals. An objective owns what
differs between methods: the network, the loss of a batch, the evaluation, the checkpoint format and its
own config section. The split follows the engine/model separation of DeiT's reference code
("Training data-efficient image transformers & distillation through attention", Touvron et al., ICML 2021,
arXiv:2012.12877; facebookresearch/deit, ``engine.py``), with the loss computation behind one call.

Life cycle in one run (every call on every rank unless said otherwise)::

    objective = build_objective(cfg, seed)          # Objective.from_config; its own generators
    objective.to(device)
    data = build_data(..., wrap_train=objective.wrap_dataset)
    model = objective.build_model()                 # global torch RNG: after the objective and the data
    objective.bind(model, total_steps)              # the unwrapped network, the run's optimizer steps
    objective.load_state_dict(state)                # on resume
    loss, details = objective.forward_loss(net, images, labels, extras, step=s, autocast=..., channels_last=...)
    result = objective.evaluate(model, val_loader, device, amp_dtype); objective.eval_record(result, "val_")
    objective.state_dict()                          # in every resume checkpoint (per rank)
    objective.on_run_end(out_dir, last_eval)        # rank 0, a run that finished (not one stopped by a signal)
    objective.close()

Shapes: ``images`` (B, C, H, W) float, ``labels`` (B,) int64 on the device; ``extras`` the third element of
a loader batch when :meth:`Objective.wrap_dataset` added one (tensors already on the device), else None.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, ContextManager, Dict, List, Optional, Tuple

import torch


class Objective:
    """Base class of the engine's training objectives (see the module docstring for the life cycle).

    Class attributes:
        name: the registry name (``objective: <name>`` in a config).
        config_section: the top-level config key this objective owns (None: none). Its defaults are
            :attr:`config_defaults`; a section holding ``enabled: true`` selects this objective when the
            config does not name one (the older spelling ``mixmo.enabled: true``).
        config_defaults: defaults of that section (every key documented where it is defined).
        weights_format: the ``format`` tag written into the safetensors metadata of its weights.
        details_name: ``steps.jsonl`` key of the per-component values of :meth:`forward_loss` (None: none).

    Instance attribute:
        num_details: length of the ``details`` vector :meth:`forward_loss` returns (0: it returns None).
    """

    name: ClassVar[str] = "objective"
    config_section: ClassVar[Optional[str]] = None
    config_defaults: ClassVar[Dict[str, Any]] = {}
    weights_format: ClassVar[str] = ""
    details_name: ClassVar[Optional[str]] = None
    num_details: int = 0

    # ---- config ----------------------------------------------------------------------------------
    @classmethod
    def validate_config(cls, cfg: Dict[str, Any]) -> None:
        """Raise ValueError for values of the resolved config this objective cannot train (its own section
        and what it requires of ``model``/``mixer``); called by the config loader before anything runs."""

    @classmethod
    def from_config(cls, cfg: Dict[str, Any], seed: Optional[int] = None) -> "Objective":
        """The objective of a run config; ``seed`` seeds its own generators (the engine passes
        ``train.seed * 1000 + rank``). Must not draw from the global generators."""
        raise NotImplementedError

    # ---- set-up ----------------------------------------------------------------------------------
    def to(self, device: torch.device) -> "Objective":
        """Move auxiliary networks (teachers, saliency models) to ``device``; returns self."""
        return self

    def wrap_dataset(self, dataset):
        """The training set with per-sample side information attached (identity by default). Its items
        become ``(image, label, extras)``; ``extras`` reaches :meth:`forward_loss` on the device."""
        return dataset

    def build_model(self) -> torch.nn.Module:
        """The network of the run config (on the CPU, freshly initialised from the global torch RNG)."""
        raise NotImplementedError

    def bind(self, model: torch.nn.Module, total_steps: int = 0) -> None:
        """Attach to the unwrapped network being trained (hooks, mixing grids) and learn the run length
        (optimizer steps); called once before the first step."""

    def close(self) -> None:
        """Remove what :meth:`bind` attached (idempotent)."""

    # ---- the training loss -----------------------------------------------------------------------
    def forward_loss(self, net: Callable[..., torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
                     extras: Any = None, *, step: int = 0,
                     autocast: Optional[Callable[[], ContextManager]] = None,
                     channels_last: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The training loss of one batch.

        Args:
            net: what runs the forward (the bound model, or its DDP / compiled wrapper).
            images: (B, C, H, W) loader images on the device; labels: (B,) int64.
            extras: per-sample side information of :meth:`wrap_dataset`, or None.
            step: optimizer steps done before this one (schedules inside the objective).
            autocast: a factory of the autocast context to run the forward under (None: none).
            channels_last: the engine's ``train.channels_last``.
        Returns:
            ``(loss, details)``: the scalar loss to back-propagate and None or a (num_details,) tensor of
            per-component values (e.g. MixMo's per-head cross-entropies). ``details`` travels in the
            engine's single host synchronisation of the step; it is logged, summed per epoch and given
            to :meth:`details_record`.
        """
        raise NotImplementedError

    def details_record(self, means: List[float]) -> Dict[str, float]:
        """``metrics.jsonl`` keys of the epoch means of the ``details`` components."""
        return {}

    # ---- generators (exact resume) ---------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The objective's random generator states (tensors and plain data), saved per rank."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave."""

    # ---- evaluation ------------------------------------------------------------------------------
    def evaluate(self, model: torch.nn.Module, loader, device: torch.device,
                 amp_dtype: Optional[torch.dtype] = None) -> Any:
        """Evaluate ``model`` (the bound network or its EMA copy) over ``loader`` (batches ``(images,
        labels)``, None batches skipped), reduced over ranks [collective]; the full result."""
        raise NotImplementedError

    def eval_record(self, result: Any, prefix: str = "val_") -> Dict[str, Any]:
        """``metrics.jsonl`` keys of an evaluation result. ``{prefix}top1`` is required: it selects the best
        checkpoint; ``{prefix}loss`` is expected."""
        raise NotImplementedError

    # ---- checkpoints and reports -----------------------------------------------------------------
    def arch(self, model: torch.nn.Module) -> Dict[str, Any]:
        """Plain-data architecture description written into the weights' metadata."""
        raise NotImplementedError

    def label(self) -> str:
        """A short name of the network for logs and errors."""
        return self.name

    def describe(self) -> str:
        """One log line on the objective's settings."""
        return f"objective {self.name}"

    def on_run_end(self, out_dir: str, last_eval: Dict[str, Any]) -> None:
        """Rank 0, after ``summary.json``, when the run finished or reached ``train.max_steps``: write the
        objective's own result files. ``last_eval``: ``result`` (of :meth:`evaluate`, the model, not its
        EMA), ``epochs_done``, ``step``, ``partial_epoch``."""

"""MixMo as an objective of the training engine (``objective: mixmo``, or ``mixmo.enabled: true``).

"MixMo: Mixing Multiple Inputs for Multiple Outputs via Deep Subnetworks", Ramé, Sun and Cord, ICCV 2021,
arXiv:2103.06132 (official code: alexrame/mixmo-pytorch). The network is a :class:`.models.MixMoNet`
(``model.arch`` wrn | preact_resnet | vit), the loss of a batch is :meth:`.mixing.MixMoTrainer.forward_loss`
(batch repetition, Dirichlet ratios, Linear-/Cut-MixMo, the weighted sum of the M heads' cross-entropies;
the ``mixer`` section is the optional mixing of each input), the evaluation is the one-forward ensemble and
every head (top-1/top-5, NLL, ECE, :mod:`.evaluate`), and a finished run writes ``eval.json``.

Config section ``mixmo`` (defaults in :attr:`MixMoObjective.config_defaults`); weights are written with
``format: vitmix-mixmo`` and the network's own architecture description.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import torch

from ..checkpoint.formats import MIXMO as MIXMO_FORMAT
from ..objectives.base import Objective
from .evaluate import evaluate_mixmo, flat_record, format_table, write_eval_json
from .mixing import INPUT_MIXERS, MixMoTrainer, build_trainer, check_options, trainer_options
from .models import ARCHS, build_mixmo_model

log = logging.getLogger("pretrain")


class MixMoObjective(Objective):
    """M subnetworks in one network, trained on mixed inputs and evaluated as an ensemble.

    Args:
        trainer: the :class:`MixMoTrainer` (its own generators, the input mixer, the loss).
        cfg: the run config (needed by :meth:`build_model`, :meth:`label`, :meth:`describe`).
        n_bins: ECE bins of the evaluation (default: ``mixmo.ece_bins`` of ``cfg``, else 15).
    """

    name = "mixmo"
    config_section = "mixmo"
    config_defaults = {
        "enabled": False,                    # true selects this objective when `objective` is null
        "num_members": 2,                    # M (1 = the single-network baseline, mixing none)
        "mixing": "cut",                     # cut (Cut-MixMo with probability p, else Linear) | linear | none
        "alpha": 2.0,                        # lambda ~ Dirichlet(alpha 1_M)
        "weight_root": 3.0,                  # r of the loss weights M lambda^(1/r) / sum lambda^(1/r)
        "batch_repeat": 2,                   # b: each input sees the loader batch b times, own permutation
        "cut_prob": 0.5,                     # probability of Cut-MixMo until anneal_start
        "cut_prob_final": 0.0,               # ... linearly to this at anneal_end (0 = Linear-MixMo)
        "anneal_start": 11.0 / 12.0,         # fractions of the run (official: 11/12 of the epochs)
        "anneal_end": 1.0,
        "anneal_unit": "epoch",              # epoch: progress (epoch + 1) / epochs (official) | step: step / steps
        "draw": "batch",                     # Cut/Linear choice and rectangle holder per batch (official) | sample
        "box_rule": "even",                  # rectangle sides 2 (c // 2) (official) | exact: c (timm 1.0)
        "cutmix_prob": 0.0,                  # official per-sample CutMix of each input (0 = off; official 0.5)
        "cutmix_alpha": 1.0,                 # its lambda ~ Beta(alpha, alpha) (official msda.beta 1)
        "l2_reg": 0.0,                       # + l2_reg * sum ||p||^2 over all parameters in the loss (official)
        "ece_bins": 15,
    }
    weights_format = MIXMO_FORMAT
    details_name = "head_losses"             # steps.jsonl: each head's unweighted cross-entropy

    def __init__(self, trainer: MixMoTrainer, cfg: Optional[Dict[str, Any]] = None, n_bins: Optional[int] = None):
        self.trainer = trainer
        self.cfg = cfg
        if n_bins is None:
            n_bins = int(cfg["mixmo"]["ece_bins"]) if cfg is not None else 15
        self.n_bins = int(n_bins)
        self.num_details = trainer.num_members

    @classmethod
    def validate_config(cls, cfg: Dict[str, Any]) -> None:
        m, x = cfg["model"], cfg["mixmo"]
        if m["arch"] not in ARCHS:
            raise ValueError(f"model.arch must be vit|wrn|preact_resnet, got {m['arch']!r}")
        if int(x["ece_bins"]) < 1:
            raise ValueError(f"mixmo.ece_bins must be >= 1, got {x['ece_bins']}")
        o = trainer_options(x)
        check_options(int(x["num_members"]), *(o[k] for k in ("mixing", "alpha", "weight_root", "batch_repeat",
                      "cut_prob", "cut_prob_final", "anneal_start", "anneal_end", "anneal_unit", "draw", "box_rule",
                      "cutmix_prob", "cutmix_alpha", "l2_reg")))
        name = str((cfg.get("mixer") or {}).get("name", "none")).lower()
        if name not in INPUT_MIXERS:
            raise ValueError(f"with mixmo.enabled, mixer.name (the optional mixing of each input) must be one of "
                             f"{INPUT_MIXERS}, got '{name}'")
        if o["cutmix_prob"] > 0 and name != "none":
            raise ValueError(f"mixmo.cutmix_prob > 0 (the official CutMix of each input) and mixer.name='{name}' "
                             "would mix the inputs twice; set mixer.name=none")

    @classmethod
    def from_config(cls, cfg: Dict[str, Any], seed: Optional[int] = None) -> "MixMoObjective":
        return cls(build_trainer(cfg, seed=seed), cfg)

    # ---- set-up ----------------------------------------------------------------------------------
    def to(self, device) -> "MixMoObjective":
        self.trainer = self.trainer.to(device)
        return self

    def wrap_dataset(self, dataset):
        return self.trainer.wrap_dataset(dataset)

    def build_model(self) -> torch.nn.Module:
        return build_mixmo_model(self.cfg)

    def bind(self, model, total_steps: int = 0) -> None:
        """The unwrapped :class:`MixMoNet` gives the mixing grid; ``total_steps`` the Cut-MixMo schedule's progress."""
        self.trainer.model, self.trainer.total_steps = model, int(total_steps)

    # ---- the training loss -----------------------------------------------------------------------
    def forward_loss(self, net, images, labels, extras=None, *, step: int = 0, autocast=None,
                     channels_last: bool = False):
        """The weighted multi-head loss and the (M,) per-head cross-entropies (:class:`MixMoTrainer`)."""
        return self.trainer.forward_loss(net, images, labels, extras, step=step, autocast=autocast,
                                         channels_last=channels_last)

    def details_record(self, means: List[float]) -> Dict[str, float]:
        return {f"train_head{k}_loss": v for k, v in enumerate(means)}

    # ---- generators, evaluation, checkpoints -----------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return self.trainer.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.trainer.load_state_dict(state)

    def evaluate(self, model, loader, device, amp_dtype=None) -> Dict[str, Any]:
        """:func:`.evaluate.evaluate_mixmo`: ``{"ensemble": {...}, "heads": [{...}, ...]}``."""
        return evaluate_mixmo(model, loader, device, amp_dtype, n_bins=self.n_bins)

    def eval_record(self, result: Dict[str, Any], prefix: str = "val_") -> Dict[str, Any]:
        """:func:`.evaluate.flat_record`: the ensemble's ``top1``/``top5``/``loss`` (= ``nll``)/``ece``/``images``
        and ``head{k}_{top1,nll,ece}`` per head."""
        return flat_record(result, prefix=prefix)

    def arch(self, model) -> Dict[str, Any]:
        return dict(model.arch)

    def label(self) -> str:
        mc = self.cfg["model"]
        name = mc["name"] if mc.get("arch", "vit") == "vit" else mc["arch"]
        return f"MixMo {name} (M={self.cfg['mixmo']['num_members']})"

    def describe(self) -> str:
        xc, t = self.cfg["mixmo"], self.trainer
        bs = int(self.cfg["data"]["batch_size"])
        inputs = (f"official CutMix p {t.cutmix_prob:g} (Beta({t.cutmix_alpha:g}))" if t.cutmix_prob > 0
                  else f"mixer {self.cfg['mixer'].get('name')}")
        return ("MixMo: M=%d, mixing %s (cut prob %.2f -> %.2f over progress %.4f-%.4f per %s, drawn per %s, "
                "%s boxes), alpha %.2f, r %.2f, batch repetition %d (%d samples per step), input mixing %s, L2 %g"
                % (t.num_members, xc["mixing"], xc["cut_prob"], xc["cut_prob_final"], xc["anneal_start"],
                   xc["anneal_end"], t.anneal_unit, t.draw, t.box_rule, xc["alpha"], xc["weight_root"],
                   xc["batch_repeat"], bs * int(xc["batch_repeat"]), inputs, t.l2_reg))

    def on_run_end(self, out_dir: str, last_eval: Dict[str, Any]) -> None:
        """``<out_dir>/eval.json`` of the last evaluation of the model, and its table in the log."""
        write_eval_json(os.path.join(out_dir, "eval.json"), last_eval["result"],
                        os.path.abspath(os.path.join(out_dir, "model.safetensors")), last_eval["epochs_done"],
                        {"step": last_eval["step"], "partial_epoch": last_eval["partial_epoch"]})
        log.info("final evaluation (%s/eval.json):\n%s", out_dir, format_table(last_eval["result"]))

"""Image classification with a sample mixer: the engine's default objective (``objective: classification``).

One step, for a loader batch of B images: the mixer (:mod:`pretrain.mixing`, ``mixer`` section) mixes the
batch, the timm ViT runs on the mixed images, the targets are built from the mixing (and, for mixers that
want it, from the same forward's last-block CLS-to-patch attention, read by
:class:`pretrain.models.vit.ClsAttentionTap`), and the mixer's own loss compares them with the logits.
Evaluation: top-1/top-5 accuracy and cross-entropy of the unmixed validation split. Weights are timm ViT
state dicts (``format: vitmix-vit``), what the downstream loaders read.

The recipe around it is DeiT's ("Training data-efficient image transformers & distillation through
attention", Touvron et al., ICML 2021, arXiv:2012.12877; facebookresearch/deit); the mixers cite their own
papers.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional

import torch

from .. import amp
from ..data.folders import accuracy
from ..dist import all_reduce_sum
from ..checkpoint.formats import TIMM, VIT as FORMAT
from ..mixing import build_mixer
from ..models import ca_swin  # noqa: F401 - registers ca_swin_* with timm
from ..models.taps import build_tap, family
from ..models.vit import create_vit, vit_arch
from .base import Objective


def build_vit(cfg: Dict[str, Any]) -> torch.nn.Module:
    """The timm ViT a config describes: ``model.name``, ``model.kwargs`` (architecture overrides; the input
    size defaults to ``data.img_size``), ``model.drop_path``, ``data.num_classes``."""
    mc, dc = cfg["model"], cfg["data"]
    kwargs = dict(mc.get("kwargs") or {})
    kwargs.setdefault("img_size", int(dc["img_size"]))
    return create_vit(mc["name"], int(dc["num_classes"]), drop_path_rate=float(mc["drop_path"]), **kwargs)


@torch.no_grad()
def evaluate(model, loader, device, amp_dtype) -> Dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy over the loader (summed over ranks). Batches are
    ``(images (B, 3, H, W), labels (B,))``; None batches (all samples unreadable) are skipped."""
    was_training = model.training
    model.eval()
    n = c1 = c5 = loss_sum = 0.0
    for batch in loader:
        if batch is None:
            continue
        images, target = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        with amp.autocast(device, amp_dtype):
            logits = model(images)
        loss_sum += torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum").item()
        a1, a5 = accuracy(logits, target, (1, 5))
        c1, c5, n = c1 + a1, c5 + a5, n + target.shape[0]
    n, c1, c5, loss_sum = all_reduce_sum([n, c1, c5, loss_sum], device)
    model.train(was_training)
    return {"top1": 100.0 * c1 / max(n, 1), "top5": 100.0 * c5 / max(n, 1), "loss": loss_sum / max(n, 1),
            "images": int(n)}


class ClassificationObjective(Objective):
    """A timm ViT trained on mixed batches with the mixer's targets and loss.

    Args:
        mixer: a :class:`pretrain.mixing.Mixer` (``build_mixer``); its ``loss(logits (B, K), targets (B, K))``
            is the training loss, its ``targets(batch, attention)`` the soft targets.
        cfg: the run config (needed by :meth:`build_model`, :meth:`arch`, :meth:`label`; optional when the
            objective only runs steps, as in the benchmarks).
    """

    name = "classification"
    weights_format = FORMAT

    def __init__(self, mixer, cfg: Optional[Dict[str, Any]] = None):
        self.mixer = mixer
        self.cfg = cfg
        self.model: Optional[torch.nn.Module] = None
        self.tap = None  # pretrain.models.taps: the CLS-attention tap of the model's family

    @classmethod
    def validate_config(cls, cfg: Dict[str, Any]) -> None:
        arch = cfg["model"]["arch"]
        if arch in ("wrn", "preact_resnet"):
            raise ValueError(f"model.arch={arch} trains through MixMo: set objective=mixmo (or mixmo.enabled=true; "
                             "mixmo.num_members=1 and mixmo.mixing=none for the single network, see "
                             "configs/mixmo/*_vanilla.yaml)")
        if arch != "vit":
            raise ValueError(f"model.arch must be vit for the classification objective, got {arch!r}")

    @classmethod
    def from_config(cls, cfg: Dict[str, Any], seed: Optional[int] = None) -> "ClassificationObjective":
        return cls(build_mixer(cfg["mixer"], int(cfg["data"]["num_classes"]), seed=seed), cfg)

    # ---- set-up ----------------------------------------------------------------------------------
    def to(self, device) -> "ClassificationObjective":
        self.mixer = self.mixer.to(device)
        return self

    def wrap_dataset(self, dataset):
        return self.mixer.wrap_dataset(dataset)

    def build_model(self) -> torch.nn.Module:
        model = build_vit(self.cfg)
        if family(model, "vit") != "vit":  # XCiT, CaiT, CA-Swin: weights tagged as such (downstream refuses them)
            self.weights_format = TIMM
        return model

    def bind(self, model: torch.nn.Module, total_steps: int = 0) -> None:
        """Keep the unwrapped ViT (mixers with ``needs_model``) and, when the mixer wants the CLS attention,
        hook the attention tap of its family (:func:`pretrain.models.taps.build_tap`) onto its last
        class-token attention."""
        self.close()
        self.model = model
        if getattr(self.mixer, "needs_attention", False):
            self.tap = build_tap(model)

    def close(self) -> None:
        if self.tap is not None:
            self.tap.remove()
            self.tap = None

    # ---- the training loss -----------------------------------------------------------------------
    def forward_loss(self, net, images, labels, extras=None, *, step: int = 0, autocast=None,
                     channels_last: bool = False):
        """Mix, forward under ``autocast``, targets (from the CLS attention (B, H/p, W/p) of this forward when
        the mixer wants it), the mixer's loss; no details."""
        batch = self.mixer(images, labels, model=self.model, extras=extras)
        x = batch.images
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (autocast() if autocast is not None else contextlib.nullcontext()):
            logits = net(x)
        attention = None
        if self.tap is not None:
            attention = self.tap.patch_attention().view(x.shape[0], *self.tap.grid(x.shape[-2], x.shape[-1]))
        return self.mixer.loss(logits, self.mixer.targets(batch, attention)), None

    # ---- generators, evaluation, checkpoints -----------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return self.mixer.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.mixer.load_state_dict(state)

    def evaluate(self, model, loader, device, amp_dtype=None) -> Dict[str, float]:
        return evaluate(model, loader, device, amp_dtype)

    def eval_record(self, result: Dict[str, float], prefix: str = "val_") -> Dict[str, Any]:
        """``{prefix}top1``, ``{prefix}top5``, ``{prefix}loss`` (cross-entropy), ``{prefix}images``."""
        return {f"{prefix}{k}": v for k, v in result.items()}

    def arch(self, model) -> Dict[str, Any]:
        fam = family(model, "vit")
        if fam == "vit":
            return vit_arch(model, self.cfg["model"]["name"])
        return {"model": self.cfg["model"]["name"], "family": fam, "img_size": [int(self.cfg["data"]["img_size"])] * 2,
                "num_classes": int(model.num_classes), "embed_dim": int(getattr(model, "embed_dim", 0))}

    def label(self) -> str:
        return self.cfg["model"]["name"]

    def describe(self) -> str:
        return "mixer %s%s" % (self.cfg["mixer"].get("name") if self.cfg else getattr(self.mixer, "name", "?"),
                               " (CLS attention from the same forward pass)" if self.tap is not None else "")


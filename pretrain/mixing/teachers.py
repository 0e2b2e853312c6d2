"""Frozen external networks used by some mixers, built from a timm name and a local checkpoint.

* TokenMix's teacher (activation maps of the clean images: CAM for CNNs, CLS attention for ViTs);
  TokenMix, Liu et al., ECCV 2022, arXiv:2207.08409 (:mod:`pretrain.mixing.tokenmix`); class activation
  maps from "Learning Deep Features for Discriminative Localization", Zhou et al., CVPR 2016,
  arXiv:1512.04150;
* TransMix's external attention model (the TransMix paper's experiment with attention from a frozen
  DINO, supervised or distilled DeiT-S); TransMix, Chen et al., CVPR 2022, arXiv:2111.09833
  (:mod:`pretrain.mixing.transmix`);
* Attentive-CutMix's pretrained CNN (channel-averaged last feature map); Attentive CutMix, Walawalkar
  et al., ICASSP 2020, arXiv:2003.13048 (:mod:`pretrain.mixing.attentive_cutmix`).

Full references: docs/references.md.

A spec is a dict (or an ``nn.Module`` used as is)::

    {name: resnet50, checkpoint: /ckpt/resnet50.pth, kwargs: {}, num_classes: null,
     input_size: null, amp: auto, random_init: false}

* ``name``: timm model name (created with ``pretrained=False``: nothing is downloaded). It may be
  omitted for checkpoints written by this project (their safetensors metadata holds the architecture).
* ``checkpoint``: ``.safetensors`` or a torch file (``.pth``/``.pt``/``.bin``; ``model``/``state_dict``
  wrappers and ``module.`` prefixes are unwrapped). Loaded strictly: missing or unexpected keys are an
  error naming the file. The classifier size follows the checkpoint unless ``num_classes`` is given.
* ``random_init: true`` allows a spec without checkpoint (random weights: smoke tests only).
* ``input_size``: images are resized to this (H, W) before the forward (default: the model's fixed
  input size for ViTs without dynamic size, else unchanged).
* ``amp``: ``auto`` (bf16 autocast on CUDA, none on CPU), ``bf16``, ``fp16`` or ``none``.

Every external model is put in eval mode, frozen (``requires_grad=False``) and run under
``torch.no_grad``; :meth:`ExternalModel.to` moves it.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Tuple, Union

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..amp import amp_mode_dtype, autocast, check_amp_mode
from ..models.vit import ClsAttentionTap

log = logging.getLogger(__name__)

SPEC_KEYS = {"name", "checkpoint", "kwargs", "num_classes", "input_size", "amp", "random_init"}
MAP_KINDS = ("auto", "attention", "cam", "activation")


def load_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(state dict, metadata) of a checkpoint on disk, read by the project's one reader
    (:func:`pretrain.checkpoint.read_checkpoint`: safetensors or weights-only torch files, container
    wrappers and ``module.``/``_orig_mod.`` prefixes removed); ``metadata["arch"]`` is a dict when present."""
    from ..checkpoint import CheckpointError, read_checkpoint, strip_prefixes

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        sd, meta = read_checkpoint(path)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from exc
    return strip_prefixes(sd)[0], meta


def _classifier_key(model: nn.Module) -> Optional[str]:
    clf = model.get_classifier() if hasattr(model, "get_classifier") else None
    weight = getattr(clf, "weight", None)
    if weight is None:
        return None
    for name, p in model.named_parameters():
        if p is weight:
            return name
    return None


def build_network(spec: Dict[str, Any], what: str = "external model") -> nn.Module:
    """A timm network from a spec dict (see the module docstring), weights loaded strictly."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"{what}: unknown option(s) {sorted(unknown)}; expected {sorted(SPEC_KEYS)}")
    ckpt = spec.get("checkpoint")
    name = spec.get("name")
    kwargs = dict(spec.get("kwargs") or {})
    state, meta = (None, {})
    if ckpt:
        state, meta = load_checkpoint(str(ckpt))
    elif not spec.get("random_init"):
        raise ValueError(f"{what}: 'checkpoint' is required (weights are never downloaded); set "
                         "random_init: true to use random weights (smoke tests only)")
    if name is None:
        if "arch" not in meta:
            raise ValueError(f"{what}: give a timm model 'name' (checkpoint {ckpt} carries no architecture metadata)")
        arch = meta["arch"]
        name = arch["model"]
        for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias"):
            if k in arch:
                kwargs.setdefault(k, tuple(arch[k]) if isinstance(arch[k], list) else arch[k])
    num_classes = spec.get("num_classes")
    try:
        model = timm.create_model(name, pretrained=False, **({"num_classes": int(num_classes)} if num_classes else {}),
                                  **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ValueError(f"{what}: unknown timm model '{name}'") from exc
        raise
    if state is not None:
        key = _classifier_key(model)
        if num_classes is None and key is not None and key in state:
            n = int(state[key].shape[0])
            if n != int(model.get_classifier().weight.shape[0]):
                model.reset_classifier(n)
        result = model.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        if missing or unexpected:
            raise ValueError(f"{what}: checkpoint {ckpt} does not match timm '{name}': missing keys "
                             f"{missing[:8]}{'...' if len(missing) > 8 else ''}, unexpected keys "
                             f"{unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    else:
        log.warning("%s '%s' uses RANDOM weights (random_init: true)", what, name)
    return model


class ExternalModel:
    """A frozen network giving per-image spatial maps.

    Args:
        model: the network (timm ViT with a class token, or a timm CNN whose ``forward_features``
            returns (B, C, h, w)).
        input_size: (H, W) the images are resized to before the forward, or None.
        amp: ``auto``, ``bf16``, ``fp16`` or ``none``.
    """

    def __init__(self, model: nn.Module, input_size: Optional[Tuple[int, int]] = None, amp: str = "auto"):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.amp = check_amp_mode(amp)
        self.is_vit = getattr(model, "cls_token", None) is not None and hasattr(model, "blocks")
        pe = getattr(model, "patch_embed", None)
        if input_size is None and pe is not None and getattr(pe, "strict_img_size", False) \
                and not getattr(pe, "dynamic_img_size", False):
            input_size = tuple(pe.img_size)
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.input_size = tuple(int(v) for v in input_size) if input_size is not None else None
        self._tap = ClsAttentionTap(model) if self.is_vit else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "ExternalModel":
        self.model.to(device)
        return self

    def _autocast(self, device: torch.device):
        return autocast(device, amp_mode_dtype(self.amp, device))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return x

    def _grid(self, x: torch.Tensor) -> Tuple[int, int]:
        p = self.model.patch_embed.patch_size
        p = p if isinstance(p, (tuple, list)) else (p, p)
        return x.shape[-2] // p[0], x.shape[-1] // p[1]

    @torch.no_grad()
    def cls_attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w) head-averaged last-block CLS attention on the patch grid (ViTs only)."""
        if not self.is_vit:
            raise ValueError(f"{type(self.model).__name__} has no class token: CLS attention needs a ViT with one")
        x = self._prepare(x)
        with self._autocast(x.device):
            self.model(x)
        gh, gw = self._grid(x)
        return self._tap.patch_attention().float().view(x.shape[0], gh, gw)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) last feature map of a CNN."""
        x = self._prepare(x)
        with self._autocast(x.device):
            f = self.model.forward_features(x)
        if f.dim() != 4:
            raise ValueError(f"{type(self.model).__name__}.forward_features gives shape {tuple(f.shape)}, "
                             "not a (B, C, h, w) feature map: use a CNN (or a ViT for attention maps)")
        return f.float()

    @torch.no_grad()
    def cam(self, x: torch.Tensor, classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, h, w) class activation maps ``w_k . f + b_k`` of class ``classes`` (B,) or, when None,
        of the network's own top-1 prediction. Negative values are kept (callers clip)."""
        f = self.features(x)
        clf = self.model.get_classifier()
        if not isinstance(clf, nn.Linear):
            raise ValueError(f"CAM needs a linear classifier; {type(self.model).__name__} has "
                             f"{type(clf).__name__}")
        if classes is None:
            with self._autocast(f.device):
                logits = self.model.forward_head(f.to(next(self.model.parameters()).dtype))
            classes = logits.argmax(1)
        classes = classes.long().to(f.device)
        if int(classes.max()) >= clf.out_features or int(classes.min()) < 0:
            raise ValueError(f"class index {int(classes.max())} out of range for a teacher with "
                             f"{clf.out_features} classes")
        w = clf.weight.float()[classes]  # B, C
        cam = torch.einsum("bchw,bc->bhw", f, w)
        if clf.bias is not None:
            cam = cam + clf.bias.float()[classes].view(-1, 1, 1)
        return cam

    @torch.no_grad()
    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w) channel mean of the last feature map (Attentive-CutMix's attention)."""
        return self.features(x).mean(1)

    def maps(self, x: torch.Tensor, kind: str = "auto", classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, h, w) non-negative maps: ``attention`` (ViT), ``cam`` (CNN, class ``classes`` or the
        prediction), ``activation`` (CNN); ``auto`` = attention for ViTs, CAM for CNNs."""
        if kind not in MAP_KINDS:
            raise ValueError(f"unknown map kind '{kind}'; expected one of {MAP_KINDS}")
        if kind == "auto":
            kind = "attention" if self.is_vit else "cam"
        if kind == "attention":
            return self.cls_attention(x)
        if kind == "cam":
            return self.cam(x, classes).clamp_min(0.0)
        return self.activation(x).clamp_min(0.0)


def build_external(spec: Union[Dict[str, Any], nn.Module, ExternalModel, None], what: str) -> ExternalModel:
    """An :class:`ExternalModel` from a spec dict, a module or an ExternalModel."""
    if spec is None:
        raise ValueError(f"{what}: no model given (set a spec with 'name' and 'checkpoint')")
    if isinstance(spec, ExternalModel):
        return spec
    if isinstance(spec, nn.Module):
        return ExternalModel(spec)
    if isinstance(spec, str):
        spec = {"checkpoint": spec} if os.path.splitext(spec)[1] in (".safetensors", ".pth", ".pt", ".bin") \
            else {"name": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"{what}: expected a dict spec, got {type(spec).__name__}")
    model = build_network(spec, what)
    return ExternalModel(model, input_size=spec.get("input_size"), amp=spec.get("amp", "auto"))

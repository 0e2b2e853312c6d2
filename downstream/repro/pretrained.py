"""The ImageNet pretraining runs (the ``imagenet`` table) that the other tables start from: their ids,
configs and checkpoint files, and the flags that pick them."""
from __future__ import annotations

import argparse
import os
from typing import List, Optional, Sequence, Tuple

from .errors import ReproError
from .args import sibling_out
from .paths import config

METHOD_LABELS = {"deit": "DeiT", "cutmix": "CutMix", "transmix": "TransMix", "tokenmix": "TokenMix"}
MODEL_LABELS = {"t": "DeiT-T", "s": "DeiT-S", "b": "DeiT-B"}


def pretrain_run_id(model: str, method: str, synthetic: bool) -> str:
    """Id of a pretraining row (its folder under ``<out>/runs`` and its config's name): ``deit_<t|s|b>_<method>``,
    or ``synthetic_<method>`` on the synthetic world, which has one model."""
    return f"synthetic_{method}" if synthetic else f"deit_{model}_{method}"


def pretrain_config_file(model: str, method: str, synthetic: bool) -> str:
    return config("pretrain", pretrain_run_id(model, method, synthetic) + ".yaml")


def add_pretrained_args(ap: argparse.ArgumentParser, methods: Sequence[str], use: str,
                        methods_help: Optional[str] = None) -> None:
    """``--pretrained`` / ``--checkpoint`` / ``--methods`` of a table that starts from the ImageNet runs;
    ``use`` says what the checkpoint is for ("initialises the backbone", "is analysed")."""
    ap.add_argument("--pretrained", default=None,
                    help="output folder of tools/repro/imagenet.py (default: beside --out, e.g. /runs/repro/imagenet)")
    ap.add_argument("--checkpoint", default="best.safetensors",
                    help=f"which file of each ImageNet run {use} (best/model/ema.safetensors)")
    ap.add_argument("--methods", nargs="+", default=list(methods), choices=list(METHOD_LABELS), help=methods_help)


def resolve_pretrained(args) -> None:
    """``args.pretrained``: the given folder, else the ImageNet table's beside ``--out``; made absolute."""
    if args.pretrained is None:
        args.pretrained = sibling_out(args, "imagenet")
    args.pretrained = os.path.abspath(args.pretrained)


def pretrained_file(args, model: str, method: str) -> str:
    """The checkpoint file (``--checkpoint``) of one ImageNet run under ``args.pretrained``."""
    return os.path.join(args.pretrained, "runs", pretrain_run_id(model, method, args.synthetic), args.checkpoint)


def add_checkpoint_args(ap: argparse.ArgumentParser, models: Sequence[str], methods: Sequence[str]) -> None:
    """The flags of an analysis table: which runs (``--models``, ``--methods``), and how to evaluate them."""
    add_pretrained_args(ap, methods, "is analysed")
    ap.add_argument("--models", nargs="+", default=list(models), choices=list(MODEL_LABELS))
    ap.add_argument("--device", default="auto", help="analysis device (cuda, cpu; default: cuda when available)")
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="autocast of the analysis")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)


def checkpoints(args) -> List[Tuple[str, str, str]]:
    """``(name, path, label)`` of the ImageNet runs to analyse; names are the run ids."""
    if args.set:
        raise ReproError("--set passes overrides to training runs; this table trains nothing")
    resolve_pretrained(args)
    out = []
    models = ["t"] if args.synthetic else args.models
    for model in models:
        for method in args.methods:
            name = pretrain_run_id(model, method, args.synthetic)
            label = ("synthetic ViT" if args.synthetic else MODEL_LABELS[model]) + " · " + METHOD_LABELS[method]
            out.append((name, pretrained_file(args, model, method), label))
    return out

"""Convert a pretrained ViT checkpoint into an MMSeg-ready backbone checkpoint.

The input may be our pretraining output (``model.safetensors`` with ``arch``
metadata), an official DeiT/timm ``.pth`` (``{'model': state_dict}``, distilled
or not), a plain or DDP-prefixed state dict, or ``{'state_dict': ...}``.
The mapping is the one in :mod:`pretrain.checkpoint` (the same code the MMSeg
backbone runs at ``init_weights``); the tool only builds the backbone, loads
the checkpoint strictly and saves the result::

    {'state_dict': {'backbone.cls_token': ..., 'backbone.pos_embed': ..., ...},
     'meta': {'format': 'vitmix-vit', 'arch': '<json>', 'source': ..., 'report': ...}}

Such a file works both as ``model.backbone.pretrained=FILE`` (strict, through
our loader) and as MMSeg's ``load_from=FILE`` (the keys already carry the
``backbone.`` prefix of the segmentor). With ``--img-size`` the position
embedding is resized to the new grid once, here; set the backbone's
``img_size`` to the same value in the config.

Examples::

    vitmix-convert runs/x/model.safetensors runs/x/backbone_mmseg.pth
    vitmix-convert deit_small_patch16_224-cd65a155.pth deit-s_mmseg.pth \\
        --num-heads 6 --img-size 512
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from pretrain.checkpoint import CheckpointError, arch_from_checkpoint, atomic_write, load_pretrained
from pretrain.checkpoint.formats import VIT

from .vit import VisionTransformer


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="input checkpoint (.safetensors or .pth)")
    p.add_argument("dst", help="output file (.pth; .safetensors writes a flat safetensors file instead)")
    p.add_argument("--img-size", type=int, nargs="+", default=None,
                   help="resize pos_embed for this input size (H [W]); default: keep the pretraining grid")
    p.add_argument("--num-heads", type=int, default=None,
                   help="recorded in the output metadata; needed only when the input has no 'arch' metadata")
    p.add_argument("--no-final-norm", action="store_true", help="drop the final norm (backbone final_norm=False)")
    p.add_argument("--prefix", default="backbone.", help="key prefix in the output (default: 'backbone.')")
    p.add_argument("--non-strict", action="store_true", help="convert even if keys are missing or unexpected")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of a .pth that weights_only loading refuses (trusted files only)")
    return p.parse_args(argv)


def convert(args: argparse.Namespace) -> dict:
    arch = arch_from_checkpoint(args.src, trust_pickle=args.trust_pickle or None)
    for key in ("embed_dim", "depth", "patch_size"):
        if key not in arch:
            raise CheckpointError(f"{args.src}: cannot determine {key} from the checkpoint")
    heads = args.num_heads or arch.get("num_heads")
    img_size = args.img_size or arch.get("img_size")
    if img_size is None:
        raise CheckpointError(f"{args.src}: cannot determine the pretraining img_size; pass --img-size")
    if len(img_size) == 1:
        img_size = [img_size[0], img_size[0]]
    backbone = VisionTransformer(
        img_size=tuple(img_size),
        patch_size=arch["patch_size"],
        in_chans=arch.get("in_chans", 3),
        embed_dim=arch["embed_dim"],
        depth=arch["depth"],
        # the head count changes no tensor shape; 1 always divides embed_dim
        num_heads=heads or 1,
        mlp_ratio=arch.get("mlp_ratio", 4.0),
        qkv_bias=arch.get("qkv_bias", True),
        final_norm=not args.no_final_norm,
    )
    report = load_pretrained(
        backbone, args.src, strict=not args.non_strict, trust_pickle=args.trust_pickle or None, log=False
    )
    out_arch = backbone.arch()
    out_arch["num_heads"] = heads
    out_arch["final_norm"] = backbone.final_norm
    if "model" in arch:
        out_arch["model"] = arch["model"]
    meta = {
        "format": VIT,
        "arch": json.dumps(out_arch, sort_keys=True),
        "source": os.path.abspath(args.src),
        "report": report.summary(max_keys=1000),
    }
    state = {args.prefix + k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    if args.dst.endswith(".safetensors"):
        from safetensors.torch import save_file

        atomic_write(args.dst, lambda tmp: save_file(state, tmp, metadata=meta))
    else:
        atomic_write(args.dst, lambda tmp: torch.save({"state_dict": state, "meta": meta}, tmp))
    print(report.summary())
    if heads is None:
        print("note: the number of attention heads is unknown (no 'arch' metadata); set num_heads in the config")
    print(f"wrote {args.dst} ({len(state)} tensors, keys prefixed '{args.prefix}', img_size {list(img_size)})")
    return {"report": report, "arch": out_arch}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        convert(args)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0

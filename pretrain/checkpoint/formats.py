"""Format tags of the project's weight files (the ``format`` entry of their safetensors metadata).

A reader that expects one kind of network refuses a file tagged with another by name, instead of
failing later on keys.
"""
from __future__ import annotations

VIT = "vitmix-vit"        # a timm VisionTransformer state dict (what every downstream backbone reads)
MIXMO = "vitmix-mixmo"    # a MixMo network: encoders.*, core.*, heads.* (pretrain.mixmo)
TIMM = "vitmix-timm"      # a timm classifier with class-attention blocks (XCiT, CaiT, CA-Swin): arch["family"]
FORMATS = (VIT, MIXMO, TIMM)

# Full unpickling of a .pth file that torch.load(weights_only=True) refuses needs this set to 1 (or the
# caller's trust_pickle=True): unpickling runs whatever code the file names.
TRUST_PICKLE_ENV = "VITMIX_TRUST_PICKLE"

DESCRIPTIONS = {
    VIT: "a single-input timm ViT written by ordinary pretraining",
    TIMM: "a timm XCiT, CaiT or CA-Swin classifier (class-attention blocks) written by pretraining",
    MIXMO: "a MixMo network (M input encoders 'encoders.*', a shared core 'core.*', M heads 'heads.*')",
}

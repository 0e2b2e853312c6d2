"""Robustness and attention-quality studies of ViT classifiers (TransMix sections 4.3-4.4).

One command per study in ``tools/analyze.py`` (occlusion, shuffle, natural-adversarial,
attention, and ``all`` for the synthetic demo); each writes ``<study>.csv``, ``<study>.json`` and
``<study>.png`` comparing any number of checkpoints. See ``docs/analysis.md``.
"""
from .attention_quality import (attention_quality_study, box_iou_any, jaccard, largest_component_boxes,
                                threshold_attention)
from .common import AnalysisError, LoadedModel, load_classifier, parse_ckpt_specs
from .natural_adversarial import read_subset_map, subset_logits, subset_study
from .occlusion import apply_patch_drop, occlusion_study, patch_drop_mask
from .shuffle import shuffle_pieces, shuffle_study

__all__ = [
    "AnalysisError", "LoadedModel", "load_classifier", "parse_ckpt_specs",
    "occlusion_study", "patch_drop_mask", "apply_patch_drop",
    "shuffle_study", "shuffle_pieces",
    "subset_study", "subset_logits", "read_subset_map",
    "attention_quality_study", "threshold_attention", "jaccard", "largest_component_boxes", "box_iou_any",
]

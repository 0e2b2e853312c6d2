"""Robustness and attention-quality studies of ViT classifiers.

The studies are those of the robustness analysis and the attention-quality experiments of
"TransMix: Attend to Mix for Vision Transformers", Chen et al., CVPR 2022, arXiv:2111.09833 (official
code: Beckschen/TransMix): occlusion by patch dropping and patch shuffling
(protocols of "Intriguing Properties of Vision Transformers", Naseer et al., NeurIPS 2021,
arXiv:2105.10497), natural adversarial examples ("Natural Adversarial Examples", Hendrycks et al.,
CVPR 2021, arXiv:1907.07174) and the CLS attention as a weakly-supervised mask. Each module cites what
it follows; docs/references.md lists every reference.

One command per study in ``tools/analyze.py`` (occlusion, shuffle, natural-adversarial,
attention, and ``all`` for the synthetic demo); each writes ``<study>.csv``, ``<study>.json`` and
``<study>.png`` comparing any number of checkpoints. Under torchrun the studies share their images among
the processes and resume from finished shards (:mod:`.sharded`, :mod:`pretrain.jobs`). See
``docs/analysis.md``.
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

"""The one checkpoint module: every reader and writer of weights in the project goes through it.

* :mod:`.formats`: the format tags written into our safetensors metadata (``vitmix-vit``, ``vitmix-mixmo``);
* :mod:`.files`: atomic writes; safetensors weights with ``format``/``arch`` metadata; plain-data state;
* :mod:`.read`: one reader of safetensors, ``.pth`` pickles (weights-only unless trusted), container
  wrappers (``model``/``state_dict``/``model_ema``...) and key prefixes (``module.``, ``_orig_mod.``);
* :mod:`.arch`: one architecture inference (metadata, else shapes; the head-count rule);
* :mod:`.pos_embed`: one position-embedding resize (timm's, antialias off);
* :mod:`.load`: mapping onto a model with timm's key layout (heads, distillation token, ``pos_embed``)
  and strict loading with a :class:`LoadReport`;
* :mod:`.resume`: the resume-checkpoint folders of pretraining runs;
* :mod:`.timm_config`: the ``config.json`` that makes a run folder a timm ``local-dir:`` model.

Consumers: the pretraining engine, the downstream backbones (MMSeg, MMDet, Detectron2) and the converter,
the mixers' teachers, the analysis studies and MixMo's evaluation.
"""
from .arch import arch_from_checkpoint, arch_of, infer_arch, num_heads_of, timm_vit_kwargs, to_2tuple
from .files import (DiskFullError, atomic_write, copy_file_atomic, load_state, load_weights, read_metadata,
                    save_state, save_weights, write_text_atomic)
from .formats import MIXMO, TRUST_PICKLE_ENV, VIT
from .load import convert_state_dict, load_pretrained, load_state_dict_checked
from .pos_embed import resize_pos_embed
from .read import CheckpointError, read_checkpoint, strip_prefixes, unwrap_state_dict
from .report import LoadReport
from .resume import (CheckpointDamaged, find_checkpoint, find_intact_checkpoint, load_checkpoint, save_checkpoint,
                     verify_checkpoint)
from .timm_config import timm_config, write_timm_config

__all__ = [
    "VIT", "MIXMO", "TRUST_PICKLE_ENV", "CheckpointError", "LoadReport",
    "DiskFullError", "atomic_write", "copy_file_atomic", "write_text_atomic", "save_weights", "load_weights", "read_metadata", "save_state", "load_state",
    "read_checkpoint", "unwrap_state_dict", "strip_prefixes",
    "infer_arch", "arch_of", "arch_from_checkpoint", "num_heads_of", "timm_vit_kwargs", "to_2tuple",
    "resize_pos_embed", "convert_state_dict", "load_pretrained", "load_state_dict_checked",
    "save_checkpoint", "find_checkpoint", "find_intact_checkpoint", "verify_checkpoint", "CheckpointDamaged",
    "load_checkpoint",
    "timm_config", "write_timm_config",
]

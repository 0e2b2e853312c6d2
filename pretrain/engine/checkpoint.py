"""Moved to :mod:`pretrain.checkpoint` (the one checkpoint module); kept while callers move over."""
from ..checkpoint.files import load_state, load_weights, save_state, save_weights, write_text_atomic  # noqa: F401
from ..checkpoint.formats import MIXMO as MIXMO_FORMAT  # noqa: F401
from ..checkpoint.formats import VIT as FORMAT  # noqa: F401
from ..checkpoint.resume import CKPT_DIR, LATEST, find_checkpoint, link_or_copy, load_checkpoint, save_checkpoint  # noqa: F401

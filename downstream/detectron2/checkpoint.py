"""Weights-only reading of every file Detectron2's checkpointer loads.

Detectron2 0.6's ``DetectionCheckpointer._load_file`` reads a ``.pkl`` with ``pickle.load`` (a crafted
file runs its code) and other files with fvcore's ``torch.load`` (weights-only only as long as torch's
default says so). :class:`SafeDetectionCheckpointer` replaces that one method; everything else (model-zoo
name matching, the Caffe2 conversion, non-strict loading, the checkpointables of ``--resume``) stays
Detectron2's. ``vitmix-train-d2`` uses it for ``train.init_checkpoint`` (training and ``--eval-only``)
and for ``--resume``. Files are told apart by their content (:func:`pretrain.checkpoint.pickles.file_kind`):

* plain pickles (model-zoo ``.pkl``: ``{"model": {name: numpy array}, "__author__": ...}``, Caffe2
  ``{"blobs": ...}``) are read by the allow-list unpickler of :mod:`pretrain.checkpoint.pickles`
  (numpy arrays in plain containers, nothing else), then given the same treatment as in Detectron2's
  ``_load_file`` (``detectron2/checkpoint/detection_checkpoint.py``: model-zoo files as they are, Caffe2
  files with ``matching_heuristics``, ``_momentum`` blobs dropped);
* torch files (``.pth``, ``.pyth``) with ``torch.load(weights_only=True)``;
* safetensors files (ours, or a detector saved that way) as ``{"model": tensors}``;
* a file holding other Python objects is refused with a :class:`~pretrain.checkpoint.CheckpointError`
  that names the file, the global it names and the opt-in: ``trust_pickle=True`` or
  ``VITMIX_TRUST_PICKLE=1`` for files from a source you trust (then it is unpickled in full).

Importing this module also makes Detectron2's own ``DetectionCheckpointer`` read this way
(:func:`install_weights_only_loading`), so that code built on Detectron2's trainers and predictors
(``DefaultTrainer``, ``DefaultPredictor`` and ``cfg.MODEL.WEIGHTS`` with the yacs backbone) is covered too;
it has no ``trust_pickle`` argument there, only ``VITMIX_TRUST_PICKLE=1``.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from detectron2.checkpoint import DetectionCheckpointer

from pretrain.checkpoint.pickles import PICKLE, SAFETENSORS, file_kind
from pretrain.checkpoint.read import CheckpointError, load_object, read_checkpoint

__all__ = ["SafeDetectionCheckpointer", "load_detectron2_file", "install_weights_only_loading"]

logger = logging.getLogger(__name__)


def load_detectron2_file(filename: str, trust_pickle: Optional[bool] = None) -> Dict[str, Any]:
    """What ``DetectionCheckpointer._load_file`` returns for ``filename``, read without running its code.

    Returns:
        a dict with ``"model"`` (name -> tensor or numpy array) and, for a Detectron2 checkpoint, its
        other entries (``optimizer``, ``scheduler``, ``iteration``, ...); model-zoo and Caffe2 pickles
        carry ``__author__`` (and ``matching_heuristics`` for Caffe2), as in Detectron2.
    """
    if file_kind(filename) == SAFETENSORS:
        sd, _ = read_checkpoint(filename, expect=None)
        return {"model": sd}
    data, kind = load_object(filename, trust_pickle=trust_pickle)
    if not isinstance(data, dict):
        raise CheckpointError(f"{filename}: expected a dict (a Detectron2 checkpoint), got {type(data).__name__}")
    if kind == PICKLE:
        if "model" in data and "__author__" in data:  # Detectron2 model-zoo format
            logger.info("Reading a file from '%s'", data["__author__"])
            return data
        if "blobs" in data:  # Caffe2 / Detectron1 model zoo: detection models hold "blobs"
            data = data["blobs"]
        data = {k: v for k, v in data.items() if not str(k).endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
    if filename.endswith(".pyth"):  # pycls
        if "model_state" not in data:
            raise CheckpointError(f"{filename}: a pycls checkpoint (.pyth) must contain 'model_state'")
        state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
        return {"model": state, "__author__": "pycls", "matching_heuristics": True}
    return data if "model" in data else {"model": data}


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose files are read weights-only (:func:`load_detectron2_file`).

    Args:
        trust_pickle: allow full unpickling of a file that holds Python objects (trusted files only);
            None reads ``VITMIX_TRUST_PICKLE``. Other arguments are ``DetectionCheckpointer``'s.
    """

    def __init__(self, model, save_dir: str = "", *, trust_pickle: Optional[bool] = None, **kwargs: Any):
        super().__init__(model, save_dir, **kwargs)
        self.trust_pickle = trust_pickle

    def _load_file(self, filename: str) -> Dict[str, Any]:
        return load_detectron2_file(filename, trust_pickle=self.trust_pickle)


def _weights_only_load_file(self, filename: str) -> Dict[str, Any]:
    return load_detectron2_file(filename, trust_pickle=getattr(self, "trust_pickle", None))


def install_weights_only_loading() -> None:
    """Make ``detectron2.checkpoint.DetectionCheckpointer`` (and so every subclass and user of it) read
    files with :func:`load_detectron2_file`; idempotent."""
    DetectionCheckpointer._load_file = _weights_only_load_file


install_weights_only_loading()

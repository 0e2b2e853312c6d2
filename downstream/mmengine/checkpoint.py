"""Let ``torch.load(weights_only=True)`` read MMEngine's own training checkpoints.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``. MMEngine
calls it without that argument when it tests (``mim test ... --checkpoint
iter_N.pth``), resumes (``--resume``) or loads ``load_from=iter_N.pth``, and
the ``iter_*.pth`` files it writes hold, besides tensors, the message hub's
``HistoryBuffer`` objects (with references to their statistics methods) and
numpy arrays/scalars. Those are refused, and the only documented way out was
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which turns the safety check off for
every file.

:func:`register_mmengine_safe_globals` (called when :mod:`downstream.mmseg`
or :mod:`downstream.mmdet` is imported, i.e. by every MMSeg/MMDet config of
this repository through ``custom_imports``) instead allow-lists exactly what those files contain:

* ``mmengine.logging.HistoryBuffer`` (plain attributes: numpy arrays, ints);
* a restricted ``getattr`` that only resolves public methods of
  ``HistoryBuffer`` (how pickle stores the references to its statistics
  methods) and refuses anything else;
* numpy arrays, dtypes and scalars (``_reconstruct``, ``ndarray``, ``dtype``
  and its per-type subclasses, ``scalar``) under both the numpy 1 and the
  numpy 2 module paths — the list PyTorch's own documentation gives for
  numpy data.

Loading stays under the weights-only unpickler, so a checkpoint that needs
anything else is still refused.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch

__all__ = ["register_mmengine_safe_globals", "mmengine_safe_globals"]

_REGISTERED = False


def _history_buffer_class():
    from mmengine.logging import HistoryBuffer

    return HistoryBuffer


def _restricted_getattr(obj: Any, name: Any, *default: Any) -> Any:
    """``getattr`` for unpickling: only public methods of MMEngine's ``HistoryBuffer``."""
    hb = _history_buffer_class()
    if (
        (obj is hb or isinstance(obj, hb))
        and isinstance(name, str)
        and not name.startswith("_")
        and callable(vars(hb).get(name))
        and not default
    ):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f"refusing getattr({getattr(obj, '__name__', type(obj).__name__)}, {name!r}) in a weights-only load: "
        "only HistoryBuffer methods are allowed (downstream.mmengine.checkpoint)"
    )


def _numpy_core():
    core = getattr(np, "_core", None)
    if core is None:  # numpy 1.x
        core = np.core
    return core.multiarray


def mmengine_safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The globals an MMEngine ``iter_*.pth``/``epoch_*.pth`` file refers to.

    Returns:
        entries for :func:`torch.serialization.add_safe_globals`.
    """
    ma = _numpy_core()
    out: List[Union[Callable, Tuple[Callable, str]]] = [_history_buffer_class(), np.ndarray, np.dtype]
    for fn_name in ("_reconstruct", "scalar"):
        fn = getattr(ma, fn_name)
        for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
            out.append((fn, f"{module}.{fn_name}"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        seen = set()
        for n in dtypes.__all__:
            cls = getattr(dtypes, n)
            if isinstance(cls, type) and cls not in seen:
                seen.add(cls)
                out.append(cls)
    else:  # numpy < 1.25: the per-type dtype classes are only reachable through instances
        for code in "?bBhHiIlLqQefdgFDGSUVOMm":
            try:
                cls = type(np.dtype(code))
            except TypeError:
                continue
            if cls is not np.dtype:
                out.append(cls)
    for path in ("builtins.getattr", "__builtin__.getattr"):
        out.append((_restricted_getattr, path))
    return out


def register_mmengine_safe_globals() -> bool:
    """Allow-list :func:`mmengine_safe_globals` for weights-only loading (once per process).

    Returns:
        True when registered (now or earlier), False when this torch has no
        ``add_safe_globals`` (torch < 2.4, which loads these files anyway).
    """
    global _REGISTERED
    if _REGISTERED:
        return True
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:
        return False
    add(mmengine_safe_globals())
    _REGISTERED = True
    return True

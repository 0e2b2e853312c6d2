"""What a checkpoint file is, read from its first bytes, and a pickle reader that runs no code.

:func:`file_kind` tells the kinds of file the project meets apart without loading them: an empty file,
safetensors (8-byte little-endian header length, then ``{``), a torch zip archive (``torch.save``'s default,
``PK\\x03\\x04``), a legacy torch file (a protocol-2 pickle of torch's magic number first), a plain pickle
(``\\x80`` and a protocol 2..5, or a protocol-0/1 pickle that parses to its STOP opcode), or none of these.

:class:`WeightsUnpickler` reads plain pickles of weights, such as Detectron2 model-zoo ``.pkl`` files
(``{"model": {name: numpy array}, "__author__": ...}``, Caffe2 ``{"blobs": ...}``): a
``pickle.Unpickler`` whose ``find_class`` resolves only the globals that rebuild numpy arrays, dtypes and
scalars, ``collections.OrderedDict`` and a few builtin containers. Every other global (``os.system``,
``builtins.eval``, a class of some package, torch's own storage rebuilders) raises
:class:`RefusedGlobal` before anything is called, so a crafted file cannot run its code. Python 2 names
(``__builtin__``, ``copy_reg``) are mapped as ``pickle`` maps them before the check.
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import pickletools
from typing import Any, Callable, Dict, Tuple

__all__ = ["EMPTY", "SAFETENSORS", "TORCH_ZIP", "TORCH_LEGACY", "PICKLE", "UNKNOWN", "KIND_NAMES",
           "file_kind", "safetensors_size_problem", "WeightsUnpickler", "RefusedGlobal", "load_weights_pickle"]

EMPTY, SAFETENSORS, TORCH_ZIP, TORCH_LEGACY, PICKLE, UNKNOWN = (
    "empty", "safetensors", "torch-zip", "torch-legacy", "pickle", "unknown")
KIND_NAMES = {
    SAFETENSORS: "a safetensors file",
    TORCH_ZIP: "a torch checkpoint (zip archive, torch.save)",
    TORCH_LEGACY: "a torch checkpoint (legacy format, torch.save before 1.6)",
    PICKLE: "a Python pickle",
}

# torch.serialization.MAGIC_NUMBER, pickled with protocol 2 as the first record of a legacy torch file
_TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_ZIP_HEADS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive's end record


def _safetensors_header_length(head: bytes) -> int:
    """The header length of a safetensors file starting with ``head``, 0 if it is none."""
    if len(head) < 9:
        return 0
    n = int.from_bytes(head[:8], "little")
    return n if 0 < n < (1 << 30) and head[8:9] == b"{" else 0


def _parses_as_pickle(path: str, limit: int = 1 << 20) -> bool:
    """True if the first ``limit`` bytes of ``path`` parse as pickle opcodes up to a STOP (no code runs)."""
    with open(path, "rb") as f:
        data = f.read(limit)
    try:
        for op, _, _ in pickletools.genops(io.BytesIO(data)):
            if op.name == "STOP":
                return True
    except Exception:  # noqa: BLE001 - any parse error: not a pickle
        return False
    return False


def file_kind(path: str) -> str:
    """One of :data:`EMPTY`, :data:`SAFETENSORS`, :data:`TORCH_ZIP`, :data:`TORCH_LEGACY`, :data:`PICKLE`,
    :data:`UNKNOWN`, from the size and first bytes of ``path`` (nothing is unpickled)."""
    if os.path.getsize(path) == 0:
        return EMPTY
    with open(path, "rb") as f:
        head = f.read(16)
    if _safetensors_header_length(head):
        return SAFETENSORS
    if head.startswith(_ZIP_HEADS):
        return TORCH_ZIP
    if head.startswith(_TORCH_LEGACY_HEAD):
        return TORCH_LEGACY
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return PICKLE
    if head[:1] in b"(}]cNIFSVLK" and _parses_as_pickle(path):  # protocol 0/1 opcodes
        return PICKLE
    return UNKNOWN


def safetensors_size_problem(path: str) -> str:
    """Why a safetensors file cannot hold what its header says ('' when its size fits the header)."""
    import json

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = _safetensors_header_length(f.read(9))
        if not n:
            return "no safetensors header"
        if 8 + n > size:
            return f"truncated: the header says it is {n} bytes long, the file has {size - 8} bytes after the length"
        f.seek(8)
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            return f"damaged header (not valid JSON: {e})"
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    need = 8 + n + max(ends, default=0)
    if need > size:
        return f"truncated: the header describes {need} bytes of file, it has {size}"
    return ""


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global outside the weights-only allow-list (:class:`WeightsUnpickler`)."""

    def __init__(self, module: str, name: str):
        super().__init__(f"global {module}.{name} is not allowed in a weights-only pickle")
        self.module, self.name = module, name

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


def _numpy(submodule: str, name: str) -> Callable[[], Any]:
    """A resolver of ``numpy.<submodule>.<name>`` that prefers ``numpy._core`` (numpy 2) over the
    deprecated ``numpy.core`` alias (numpy 1 writes the latter, numpy 2 the former; both are accepted)."""

    def resolve():
        import importlib

        for prefix in ("numpy._core", "numpy.core"):
            try:
                return getattr(importlib.import_module(f"{prefix}.{submodule}"), name)
            except (ImportError, AttributeError):
                continue
        raise RefusedGlobal(f"numpy.core.{submodule}", name)

    return resolve


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (always latin-1); other codecs refused."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1", "l1"):
        raise RefusedGlobal("_codecs", f"encode (codec {encoding!r})")
    return text.encode("latin1", errors) if isinstance(text, str) else bytes(text)


def _numpy_attr(name: str) -> Callable[[], Any]:
    return lambda: getattr(__import__("numpy"), name)


_ALLOWED: Dict[Tuple[str, str], Callable[[], Any]] = {
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    ("builtins", "bytearray"): lambda: bytearray,
    ("builtins", "bytes"): lambda: bytes,
    ("builtins", "complex"): lambda: complex,
    ("builtins", "slice"): lambda: slice,
    ("_codecs", "encode"): lambda: _latin1_encode,
    ("numpy", "ndarray"): _numpy_attr("ndarray"),
    ("numpy", "dtype"): _numpy_attr("dtype"),
}
for _prefix in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_prefix}.multiarray", "_reconstruct")] = _numpy("multiarray", "_reconstruct")
    _ALLOWED[(f"{_prefix}.multiarray", "scalar")] = _numpy("multiarray", "scalar")
    _ALLOWED[(f"{_prefix}.numeric", "_frombuffer")] = _numpy("numeric", "_frombuffer")


class WeightsUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in plain containers and refuses every other global (:class:`RefusedGlobal`)."""

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in _compat_pickle.NAME_MAPPING:  # Python 2 names, mapped as pickle's own find_class does
            key = _compat_pickle.NAME_MAPPING[key]
        elif module in _compat_pickle.IMPORT_MAPPING:
            key = (_compat_pickle.IMPORT_MAPPING[module], name)
        resolve = _ALLOWED.get(key)
        if resolve is None:
            raise RefusedGlobal(module, name)
        return resolve()

    def persistent_load(self, pid):  # torch files keep storages outside the pickle: not a plain pickle
        raise pickle.UnpicklingError(f"persistent id {str(pid)[:60]!r}: not a plain pickle of arrays")


def load_weights_pickle(path: str, encoding: str = "latin1") -> Any:
    """The object in the plain pickle ``path``, read by :class:`WeightsUnpickler`. ``encoding`` decodes
    Python 2 strings: ``"latin1"`` as Detectron2 reads its model zoo, ``"bytes"`` as CIFAR's batches are
    read. Raises :class:`RefusedGlobal`, ``pickle.UnpicklingError``, ``EOFError`` and what a damaged
    stream raises; the caller names the file."""
    with open(path, "rb") as f:
        return WeightsUnpickler(f, encoding=encoding).load()

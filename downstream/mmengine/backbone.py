"""Strict checkpoint loading for the MMEngine-based backbones (MMSeg ``VitMixViT``, MMDet ``VitMixViTDet``).

Both backbones take ``pretrained=PATH`` plus the strictness options of
:func:`downstream.weights.load_pretrained` and load the checkpoint last, inside
``init_weights``, so that no ``init_cfg`` overwrites it.

The ``init_cfg`` policy, the same in both frameworks:

* ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` (MMEngine's usual
  spelling) is a synonym of ``pretrained=PATH``: it is taken out of
  ``init_cfg`` and loaded by our strict loader, never by MMEngine's
  ``PretrainedInit`` (which loads non-strictly and would leave a backbone with
  the wrong key layout random, with only a log line). Its ``prefix`` may be
  absent, ``'backbone'`` or ``'backbone.'`` (the loader finds a ``backbone.``
  sub-dict itself); any other prefix is refused. Given together with a
  different ``pretrained``, it is an error.
* every other ``init_cfg`` entry (``Constant``, ``TruncNormal``, ...) is applied
  by MMEngine first; the checkpoint is loaded afterwards, over it.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence, Tuple, Union

from mmengine.logging import print_log
from mmengine.model import BaseModule

from ..weights import LoadReport

__all__ = ["split_pretrained_init_cfg", "configure_pretrained", "strict_init_weights"]

InitCfg = Union[None, dict, List[dict]]


def split_pretrained_init_cfg(name: str, init_cfg: InitCfg) -> Tuple[Optional[str], InitCfg]:
    """Split ``init_cfg`` into (the checkpoint of a ``Pretrained`` entry or None, the other entries).

    Args:
        name: the backbone's registered name (for messages).
        init_cfg: a dict, a list of dicts or None.

    Returns:
        (checkpoint, rest): ``rest`` keeps the input's form (a dict stays a
        dict, a list a list) and is None when nothing is left.

    Raises:
        ValueError: a ``Pretrained`` entry with an unsupported ``prefix``.
    """
    if init_cfg is None:
        return None, None
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg)
    ckpt, rest = None, []
    for c in cfgs:
        if c.get("type") == "Pretrained":
            prefix = c.get("prefix")
            if prefix not in (None, "", "backbone", "backbone."):
                raise ValueError(
                    f"{name}: init_cfg Pretrained prefix={prefix!r} is not supported; "
                    "use pretrained=PATH (the loader finds 'backbone.' keys itself)"
                )
            ckpt = c.get("checkpoint")
        else:
            rest.append(c)
    if not rest:
        return ckpt, None
    return ckpt, (rest[0] if isinstance(init_cfg, dict) else rest)


def configure_pretrained(
    module: BaseModule,
    name: str,
    pretrained: Optional[str],
    init_cfg: InitCfg = None,
    strict: bool = True,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
    trust_pickle: bool = False,
) -> None:
    """Apply the ``init_cfg`` policy and store the loading options on ``module``.

    Sets ``module.init_cfg`` (without any ``Pretrained`` entry),
    ``module.pretrained``, ``strict``, ``allow_missing``,
    ``allow_unexpected``, ``trust_pickle`` and ``load_report`` (None until
    :func:`strict_init_weights` ran).

    Raises:
        ValueError: ``pretrained`` and a ``Pretrained`` ``init_cfg`` name different files.
    """
    ckpt, rest = split_pretrained_init_cfg(name, init_cfg)
    if ckpt is not None:
        if pretrained is not None and pretrained != ckpt:
            raise ValueError(f"{name}: both pretrained={pretrained!r} and init_cfg checkpoint={ckpt!r}")
        pretrained = ckpt
    module.init_cfg = rest
    module.pretrained = pretrained
    module.strict = bool(strict)
    module.allow_missing = list(allow_missing or ())
    module.allow_unexpected = list(allow_unexpected or ())
    module.trust_pickle = bool(trust_pickle)
    module.load_report: Optional[LoadReport] = None


def strict_init_weights(module: BaseModule, name: str, load: Callable[..., LoadReport]) -> None:
    """``init_weights`` of a backbone: apply its ``init_cfg`` (if any), then load ``module.pretrained``.

    The load is ``load(path, strict=..., allow_missing=..., allow_unexpected=...,
    trust_pickle=..., log=False)`` with the options of :func:`configure_pretrained`; the
    key report goes to MMEngine's log. A missing ``pretrained`` keeps the random
    initialisation with a warning; a URL is refused (nothing is downloaded).
    """
    if module.init_cfg:
        BaseModule.init_weights(module)  # sets module._is_init
    if module.pretrained is None:
        print_log(f"{name}: no pretrained checkpoint given (pretrained=None); the backbone keeps its "
                  "random initialisation", logger="current", level=logging.WARNING)
    else:
        if str(module.pretrained).startswith(("http://", "https://")):
            raise ValueError(f"{name}: pretrained must be a local file, got the URL {module.pretrained}; "
                             "download it first")
        report = load(module.pretrained, strict=module.strict, allow_missing=module.allow_missing,
                      allow_unexpected=module.allow_unexpected, trust_pickle=module.trust_pickle or None,
                      log=False)
        module.load_report = report
        level = logging.INFO if report.complete else logging.WARNING
        print_log(f"{name}: " + report.summary(), logger="current", level=level)
    module._is_init = True


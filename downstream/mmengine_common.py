"""Strict checkpoint loading for the MMEngine-based adapters (MMSeg and MMDet backbones).

Both backbones take ``pretrained=PATH`` plus the strictness options of
:func:`downstream.weights.load_pretrained` and load the checkpoint last, inside
``init_weights``, so that no ``init_cfg`` overwrites it. The two helpers here are
that shared behaviour; the framework modules only register classes.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

from mmengine.logging import print_log
from mmengine.model import BaseModule

from .weights import LoadReport


def set_pretrained_options(module, pretrained: Optional[str], strict: bool = True,
                           allow_missing: Sequence[str] = (), allow_unexpected: Sequence[str] = (),
                           trust_pickle: bool = False) -> None:
    """Store the checkpoint path and the loading options on ``module`` (read by :func:`strict_init_weights`)."""
    module.pretrained = pretrained
    module.strict = bool(strict)
    module.allow_missing = list(allow_missing or ())
    module.allow_unexpected = list(allow_unexpected or ())
    module.trust_pickle = bool(trust_pickle)
    module.load_report: Optional[LoadReport] = None


def strict_init_weights(module: BaseModule, name: str, load: Callable[..., LoadReport]) -> None:
    """``init_weights`` of a backbone: apply its ``init_cfg`` (if any), then load ``module.pretrained``
    with ``load(path, strict=..., allow_missing=..., allow_unexpected=..., trust_pickle=..., log=False)``
    and write the key report to MMEngine's log. A missing ``pretrained`` keeps the random
    initialisation with a warning; a URL is refused (nothing is downloaded)."""
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

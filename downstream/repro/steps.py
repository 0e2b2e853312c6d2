"""The step of each tool a table runs: ``tools/pretrain.sh``, ``mim train`` / ``mim test`` and
``tools/analyze.py``, with when each counts as done and how it resumes; and the options the
analysis studies of a table share."""
from __future__ import annotations

import math
import os
from typing import Callable, Dict, List, Optional, Sequence

from .errors import Missing, ReproError
from .paths import python, tool
from .results import analysis_done, mm_result_json, mm_resumable, mm_train_done, pretrain_done
from .rows import Step
from .scaling import scale_count

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def pretrain_step(config: str, run_dir: str, overrides: Sequence[str], nproc: Optional[int],
                  epochs: int, name: str = "pretrain", env: Optional[Dict[str, str]] = None) -> Step:
    """``tools/pretrain.sh`` for one run; resumes with ``--resume auto`` when checkpoints exist."""
    launch = ["bash", tool("pretrain.sh")] + (["--nproc", str(nproc)] if nproc else [])
    ov = list(overrides) + [f"train.out_dir={run_dir}"]
    return Step(name, launch + [config] + ov, done=lambda: pretrain_done(run_dir, epochs), env=env or {},
                partial=lambda: os.path.isdir(os.path.join(run_dir, "checkpoints")),
                resume_argv=launch + [config, "--resume", "auto"] + ov)


def mim_train_step(package: str, config: str, work_dir: str, options: Sequence[str], iters: int,
                   nproc: Optional[int], env: Optional[Dict[str, str]] = None, name: str = "train") -> Step:
    """``mim train`` into ``work_dir``; done at ``iter_<iters>.pth``, resumes with ``--resume``."""
    launch = ["--launcher", "pytorch", "--gpus", str(nproc)] if nproc and nproc > 1 else []
    argv = ["mim", "train", package, config, "--work-dir", work_dir] + launch + ["--cfg-options", *options]
    resume = ["mim", "train", package, config, "--work-dir", work_dir] + launch + ["--resume", "--cfg-options",
                                                                                   *options]
    return Step(name, argv, done=lambda: mm_train_done(work_dir, iters), env=env or {},
                partial=lambda: mm_resumable(work_dir), resume_argv=resume)


def mim_test_step(package: str, config: str, checkpoint: str, work_dir: str, options: Sequence[str],
                  key: str, nproc: Optional[int], tta: bool = False, env: Optional[Dict[str, str]] = None,
                  name: str = "test", done: Optional[Callable[[], bool]] = None) -> Step:
    """``mim test`` into ``work_dir``; done when a result holding ``key`` is there (or when ``done()`` says so)."""
    launch = ["--launcher", "pytorch", "--gpus", str(nproc)] if nproc and nproc > 1 else []

    def has_result() -> bool:
        try:
            mm_result_json(work_dir, key)
            return True
        except Missing:
            return False

    argv = ["mim", "test", package, config, "--checkpoint", checkpoint, "--work-dir", work_dir] + launch \
        + (["--tta"] if tta else []) + ["--cfg-options", *options]
    return Step(name, argv, done=done or has_result, env=env or {})


# ------------------------------------------------------------------- analysis (no training)
def analysis_common(args, ckpts) -> List[str]:
    """The options every ``tools/analyze.py`` study of a table shares."""
    argv = ["--ckpt"] + [f"{n}={p}" for n, p, _ in ckpts] + ["--device", args.device, "--amp", args.amp]
    bs = args.batch_size or (64 if args.synthetic else 128)
    argv += ["--batch-size", str(bs)]
    if args.workers is not None or args.synthetic:
        argv += ["--workers", str(args.workers if args.workers is not None else 2)]
    if args.synthetic:
        argv += ["--crop-pct", "1.0"]
    return argv


def count_images(folder: str, nominal: int) -> int:
    """Images under ``folder`` (recursively), or ``nominal`` when it is not there (dry runs)."""
    if not os.path.isdir(folder):
        return nominal
    n = 0
    for _, _, files in os.walk(folder, followlinks=True):
        n += sum(1 for f in files if f.lower().endswith(IMAGE_EXT))
    return n


def max_batches(args, folder: str, nominal: int, batch: int) -> List[str]:
    """``--max-batches`` for ``--scale`` below 1 (a fraction of the evaluation set, at least one
    batch); nothing at scale 1 or above."""
    if args.scale >= 1:
        return []
    total = math.ceil(count_images(folder, nominal) / batch)
    return ["--max-batches", str(scale_count(total, args.scale))]


def analysis_step(name: str, study: str, study_argv: List[str], out_dir: str, names: Sequence[str],
                  before: Optional[Callable[[], None]] = None, json_name: Optional[str] = None) -> Step:
    """One ``tools/analyze.py STUDY`` call over every checkpoint; done when each is in its JSON."""
    argv = [python(), tool("analyze.py"), study] + study_argv + ["--out", out_dir]
    jn = json_name or study.replace("-", "_")
    return Step(name, argv, done=lambda: analysis_done(out_dir, jn, names), before=before)


def write_class_list(train_dir: str, dest: str) -> Callable[[], None]:
    """A ``before`` hook writing the model's classes in output order (sorted class folders, as
    ``ImageFolder`` orders them) for ``--class-list``."""
    def make() -> None:
        if not os.path.isdir(train_dir):
            raise ReproError(f"{train_dir} not found: the class list is the sorted class folders of the "
                             "ImageNet training set")
        classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "w") as f:
            f.write("\n".join(classes) + "\n")
    return make

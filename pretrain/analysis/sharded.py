"""The analysis studies as side jobs (:mod:`pretrain.jobs`): each study's data is cut into shards of whole
batches, the ranks of a torchrun launch share them, finished shards are kept for a resumed run, and
unreadable images are counted and skipped.

A study's per-batch work is its ``*_counts`` function (:mod:`.occlusion`, :mod:`.shuffle`,
:mod:`.natural_adversarial`, :mod:`.attention_quality`); the counts of the shards are merged in
shard order by the study's ``merge`` (integer sums; float sums kept per batch and added in batch
order), so the result rows are those of one pass over the data in one process, bit for bit. The
random draws of occlusion and shuffle are replayed up to each shard's first batch for the same reason.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from .. import jobs
from ..dist import barrier
from .common import parse_ckpt_specs

# settings that do not change a study's numbers (where the results go, how they are computed)
_NOT_PARAMS = {"out", "workers", "progress", "work_dir", "resume", "keep_shards", "ctx", "device_label", "study",
               "max_batches"}


def start(args) -> jobs.JobContext:
    """Join the launch's process group; ``args.device`` becomes this rank's device and
    ``args.device_label`` what the results name (the same for any number of processes)."""
    ctx = jobs.start_job(args.device)
    args.device_label = ctx.device.type if args.device in (None, "", "auto", "cuda") else str(args.device)
    args.device = str(ctx.device)
    args.ctx = ctx
    return ctx


def context(args) -> jobs.JobContext:
    ctx = getattr(args, "ctx", None)
    return ctx if ctx is not None else start(args)


def job_params(args, job: str) -> Dict[str, Any]:
    """What a study's shards depend on besides their images: its settings, the checkpoints' files."""
    params = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_PARAMS}
    params["device"] = args.device_label
    params["torch"] = torch.__version__
    params["checkpoints"] = [[n, jobs.fingerprint(p)] for n, p in parse_ckpt_specs(args.ckpt)]
    if getattr(args, "saliency", None):
        params["saliency"] = jobs.fingerprint(args.saliency)
    return {"job": job, **params}


class StudyRun:
    """One sharded pass of a study over one dataset (see :func:`run_study`)."""

    def __init__(self, store: jobs.ShardStore, shards, report: jobs.JobReport, keep: bool):
        self.store, self.shards, self.report, self.keep = store, shards, report, keep

    def finish(self) -> None:
        """After the results are written (rank 0): drop the shard files unless ``--keep-shards``."""
        if not self.keep:
            self.store.remove(self.shards)


def run_study(args, job: str, dataset, counts: Callable[[Any, int], Dict], merge: Callable,
              collate_fn: Optional[Callable] = None) -> Tuple[Optional[Any], Optional[StudyRun]]:
    """``counts(loader, skip_batches)`` over the shards of ``dataset``; on rank 0 ``(merged counts,
    run)``, ``(None, None)`` on the other ranks. ``--max-batches`` keeps the first batches' images."""
    ctx = context(args)
    n = len(dataset)
    if args.max_batches:
        n = min(n, int(args.max_batches) * int(args.batch_size))
    shards = jobs.make_shards(n, jobs.shard_size_for(args.shard_size, int(args.batch_size)))
    store = jobs.ShardStore(work_dir(args), job, job_params(args, job))
    items = getattr(dataset, "samples", None) or getattr(dataset, "items")

    def compute(shard, bad_log, bar):
        loader = jobs.shard_loader(dataset, shard, int(args.batch_size), int(args.workers), ctx.device, bad_log,
                                   collate_fn=collate_fn, split=job, bar=bar)
        return counts(loader, shard.start // int(args.batch_size))

    report = jobs.run_shards(job, shards, compute, store, lambda s: jobs.file_inputs(items[s.start:s.stop]), ctx,
                             resume=args.resume, progress=jobs.progress_enabled(args.progress, ctx))
    if not ctx.is_main:
        return None, None
    jobs.log_summary(report)
    return merge(report.results), StudyRun(store, shards, report, bool(args.keep_shards))


def unreadable_meta(*runs: Optional[StudyRun]) -> Dict[str, Any]:
    """``{"unreadable_images": [[path, reason], ...]}`` when a run skipped files, else ``{}`` (the result
    files of a clean run keep their layout)."""
    rows = [r for run in runs if run is not None for r in run.report.unreadable]
    return {"unreadable_images": rows} if rows else {}


def work_dir(args) -> str:
    return args.work_dir or os.path.join(args.out, ".shards")


def finish(args) -> None:
    """Every rank, after the last study: rank 0 removes the emptied work folder."""
    jobs.finish_job(work_dir(args), context(args))


def main_only(args, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only, then wait for it on every rank (e.g. a folder the next study reads)."""
    out = fn() if context(args).is_main else None
    barrier()
    return out

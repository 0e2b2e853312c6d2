"""Side jobs (label maps, analysis studies) at the engine's standard: sharded over torchrun's ranks,
resumable after a kill, robust to unreadable images, with a progress bar on rank 0.

How a job runs:

* The sorted list of its N items (images) is cut into **shards**: fixed chunks of ``shard_size``
  consecutive items (:func:`make_shards`), whatever the number of ranks. ``shard_size`` is a
  multiple of the batch size, so every shard's batches are the batches a single process would form
  over the whole list: a job's per-batch results do not depend on how many ranks ran it.
* Each shard has a **key**: a hash of the job's parameters and of the shard's inputs (each file's
  path, size and modification time). The shards without a finished file for their key are dealt round
  robin to the ranks (:func:`run_shards`; rank 0's view decides), and each one is written, when done,
  to ``<work_dir>/<job>-<index>-<key prefix>.pt`` atomically (temporary file, fsync, rename:
  :func:`pretrain.checkpoint.files.save_state`) with its full key inside. A rerun skips the finished
  shards; a shard made from other inputs or parameters has another key, so it is recomputed, never
  reused. A kill loses at most the shards in progress.
* After a barrier, rank 0 reads every shard in order and merges them (the caller's reduction, in a
  fixed order, so that the merged result is bit-identical to a single-process run). The work folder
  must therefore be visible to all ranks (one machine, or a shared file system as for the training
  run folder).
* Images are read through :class:`pretrain.data.robust.KeyedDataset` (``replace=False``): a file
  that cannot be decoded (:class:`pretrain.data.folders.UnreadableImageError`: truncated or corrupt,
  zero bytes, not an image) is logged with its path and left out of its batch; the loader yields
  :class:`Present` items (the collated batch of the readable samples, and which positions of the
  batch they are). Each shard stores its unreadable files, so a resumed run still counts them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, default_collate

from .checkpoint.files import load_state, save_state
from .data.robust import KeyedDataset, read_bad_images
from .dist import barrier, gather_objects, init_distributed

log = logging.getLogger(__name__)

SHARD_FORMAT = "vitmix-shard-1"
DEFAULT_SHARD_BATCHES = 16
PROGRESS_CHOICES = ("auto", "on", "off")


class JobError(ValueError):
    """Bad settings of a side job (shard size, work folder), or shard files that cannot be merged."""


# ------------------------------------------------------------------------------ context
@dataclass
class JobContext:
    """Where this process stands: ``rank`` of ``world`` processes, on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def add_job_args(p, outputs: str = "results") -> None:
    """The side jobs' shared options on an ``argparse`` parser: sharding, resume, shard files, progress."""
    p.add_argument("--shard-size", type=int, default=None,
                   help="images per shard, a multiple of --batch-size (default: 16 batches)")
    p.add_argument("--work-dir", default=None, help="finished shards (default: OUT/.shards)")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="recompute finished shards")
    p.add_argument("--keep-shards", action="store_true", help=f"keep the shard files after writing the {outputs}")
    p.add_argument("--progress", default="auto", choices=PROGRESS_CHOICES,
                   help="tqdm bar on rank 0 (auto: when stderr is a terminal)")


def start_job(device: Optional[str] = None) -> JobContext:
    """Join torchrun's process group (gloo on CPU, NCCL on GPUs; nothing in one process) and pick the
    device: ``auto``/None gives this rank's GPU (``LOCAL_RANK``) or the CPU, ``cuda`` gives this rank's
    GPU; any other name (``cpu``, ``cuda:3``) is used as it is."""
    rank, world, dev = init_distributed()  # the engine's reading of the launcher's environment
    name = (device or "auto").strip()
    if name == "auto" or (name == "cuda" and dev.type == "cuda"):
        chosen = dev if world > 1 else torch.device(dev.type)
    else:
        chosen = torch.device(name)
    return JobContext(rank=rank, world=world, device=chosen)


def progress_enabled(flag: str, ctx: JobContext) -> bool:
    """The bar shows on rank 0 only: ``on``, or ``auto`` when stderr is a terminal (as ``train.progress``)."""
    if flag not in PROGRESS_CHOICES:
        raise JobError(f"--progress must be one of {', '.join(PROGRESS_CHOICES)}, got {flag!r}")
    return ctx.is_main and (flag == "on" or (flag == "auto" and sys.stderr.isatty()))


# ------------------------------------------------------------------------------- shards
@dataclass(frozen=True)
class Shard:
    index: int
    start: int  # first item (position in the sorted item list)
    stop: int   # one past the last

    def __len__(self) -> int:
        return self.stop - self.start


def shard_size_for(shard_size: Optional[int], batch_size: int) -> int:
    """The shard size: ``DEFAULT_SHARD_BATCHES`` batches by default; a given size must be a positive
    multiple of the batch size (so that shards are made of whole batches)."""
    if batch_size < 1:
        raise JobError(f"batch size must be positive, got {batch_size}")
    if shard_size is None:
        return DEFAULT_SHARD_BATCHES * batch_size
    if shard_size < 1 or shard_size % batch_size:
        raise JobError(f"--shard-size {shard_size} must be a positive multiple of --batch-size {batch_size}")
    return int(shard_size)


def make_shards(n: int, shard_size: int) -> List[Shard]:
    """Consecutive chunks of ``shard_size`` items (the last one shorter) of ``n`` items."""
    return [Shard(i, s, min(s + shard_size, n)) for i, s in enumerate(range(0, n, shard_size))]


def fingerprint(path: str) -> List[Any]:
    """``[path, size, mtime_ns]`` of a file (``[path, None, None]`` when it is missing)."""
    try:
        st = os.stat(path)
    except OSError:
        return [path, None, None]
    return [path, st.st_size, st.st_mtime_ns]


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (unknown types by ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class ShardStore:
    """The finished shards of one job in ``work_dir/<job>/``: ``<job>-<index:05d>-<key prefix>.pt``, each
    holding its full key (a shard from other inputs or parameters has another name, so it is never taken)."""

    def __init__(self, work_dir: str, job: str, params: Dict[str, Any]):
        self.work_dir = work_dir
        self.folder = os.path.join(work_dir, job)
        self.job = job
        self.params = digest({"job": job, "params": params})
        os.makedirs(self.folder, exist_ok=True)

    def path(self, shard: Shard, key: str) -> str:
        return os.path.join(self.folder, f"{self.job}-{shard.index:05d}-{key[:16]}.pt")

    def bad_log(self, shard: Shard) -> str:
        return os.path.join(self.folder, f".{self.job}-{shard.index:05d}.unreadable.tsv")

    def key(self, shard: Shard, inputs: Any) -> str:
        return digest({"params": self.params, "start": shard.start, "stop": shard.stop, "inputs": inputs})

    def finished(self, shard: Shard, key: str) -> bool:
        return os.path.isfile(self.path(shard, key))

    def _others(self, shard: Optional[Shard] = None) -> List[str]:
        prefix = f"{self.job}-{shard.index:05d}-" if shard is not None else f"{self.job}-"
        return [os.path.join(self.folder, n) for n in os.listdir(self.folder) if n.startswith(prefix)
                and n.endswith(".pt") and len(n) == len(prefix) + (16 if shard is not None else 22) + 3]

    def load(self, shard: Shard, key: str) -> Dict[str, Any]:
        """The stored payload ``{result, unreadable, ...}`` of a finished shard (a clear error when its file
        is unreadable or holds another key)."""
        path = self.path(shard, key)
        try:
            data = load_state(path)
        except Exception as exc:  # noqa: BLE001 - damaged or vanished
            raise JobError(f"{path}: cannot read this finished shard ({exc}); delete it and rerun") from exc
        if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT or data.get("key") != key:
            raise JobError(f"{path} does not hold shard {shard.index} of {self.job} for these inputs; delete it "
                           "and rerun")
        return data

    def save(self, shard: Shard, key: str, result: Any, unreadable: List[List[str]]) -> None:
        for old in self._others(shard):  # the same shard from other inputs: replaced
            if old != self.path(shard, key):
                os.remove(old)
        save_state(self.path(shard, key), {"format": SHARD_FORMAT, "key": key, "job": self.job,
                                           "index": shard.index, "start": shard.start, "stop": shard.stop,
                                           "result": result, "unreadable": unreadable})

    def remove(self, shards: Iterable[Shard]) -> None:
        """Delete the job's shard files and folder, and the temporary files a killed run left (rank 0,
        once every rank is done with this job; :func:`finish_job` removes the emptied work folder)."""
        for s in shards:
            if os.path.exists(self.bad_log(s)):
                os.remove(self.bad_log(s))
        for path in self._others():
            os.remove(path)
        for name in os.listdir(self.folder):
            if name.startswith(".tmp-") and name.endswith(".pt") and f"{self.job}-" in name:
                os.remove(os.path.join(self.folder, name))
        try:
            os.rmdir(self.folder)
        except OSError:
            pass


@dataclass
class JobReport:
    """What :func:`run_shards` did; ``results`` (shard order) only on rank 0."""

    job: str
    shards: int
    computed: int
    reused: int
    unreadable: List[List[str]]
    results: Optional[List[Any]]
    seconds: float
    per_rank: List[int] = field(default_factory=list)  # shards computed by each rank

    def summary(self) -> str:
        bad = f", {len(self.unreadable)} unreadable image(s) skipped" if self.unreadable else ""
        ranks = f" ({' + '.join(map(str, self.per_rank))} on {len(self.per_rank)} ranks)" if len(self.per_rank) > 1 else ""
        return (f"{self.job}: {self.shards} shard(s): {self.computed} computed{ranks}, {self.reused} skipped "
                f"(finished before){bad}; {self.seconds:.1f}s")


def run_shards(job: str, shards: Sequence[Shard], compute: Callable[[Shard, str, Any], Any], store: ShardStore,
               inputs: Callable[[Shard], Any], ctx: JobContext, resume: bool = True,
               progress: bool = False) -> JobReport:
    """Compute the shards that are not finished yet (``compute(shard, bad_log, bar)``), shared among the
    ranks, wait for every rank, and on rank 0 read all shard results in order.

    Rank 0's view of what is finished decides for all ranks, and the unfinished shards are dealt round
    robin, so a resumed run keeps every rank busy whatever its number of processes. ``compute`` reads its
    images through :func:`shard_loader` with ``bad_log``; the unreadable files logged there are stored
    with the shard. ``progress``: a tqdm bar of rank 0's images, which ``shard_loader`` advances.
    """
    t0 = time.time()
    keys = {s.index: store.key(s, inputs(s)) for s in shards}
    todo = [s.index for s in shards if not (resume and store.finished(s, keys[s.index]))]
    todo = gather_objects(todo)[0]  # also makes every rank decide before any rank writes a shard
    mine = [shards[i] for i in todo[ctx.rank::ctx.world]]
    bar = make_bar(progress and ctx.is_main, sum(len(s) for s in mine), f"{job} (rank 0 of {ctx.world})")
    try:
        for s in mine:
            bad_log = store.bad_log(s)
            if os.path.exists(bad_log):  # left by a killed attempt
                os.remove(bad_log)
            result = compute(s, bad_log, bar)
            rows = sorted([p, r] for _, p, r in read_bad_images(bad_log))
            store.save(s, keys[s.index], result, rows)
            if os.path.exists(bad_log):
                os.remove(bad_log)
    finally:
        if bar is not None:
            bar.close()
    barrier()
    per_rank = [n for n in gather_objects(len(mine))]
    results, unreadable = None, []
    if ctx.is_main:
        results = []
        for s in shards:
            if not store.finished(s, keys[s.index]):
                raise JobError(f"{store.path(s, keys[s.index])}: shard {s.index} of {job} is missing after every "
                               "rank finished: the work folder must be one folder that every rank sees "
                               f"({store.folder})")
            data = store.load(s, keys[s.index])
            results.append(data["result"])
            unreadable.extend(data["unreadable"])
    return JobReport(job, len(shards), len(todo), len(shards) - len(todo), unreadable, results, time.time() - t0,
                     per_rank)


def finish_job(work_dir: str, ctx: JobContext) -> None:
    """The end of a side job on every rank: wait for rank 0 (its outputs are written), which then removes
    the work folder if the jobs left it empty (a folder another rank could still be using is never removed)."""
    barrier()
    if ctx.is_main:
        try:
            os.rmdir(work_dir)
        except OSError:
            pass


def make_bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True)


# ------------------------------------------------------------------------------ loading
class Present(NamedTuple):
    """A batch of a shard loader: the collated readable samples (None when none was readable) and
    ``present`` (B,) bool, which of the batch's B positions they are."""

    batch: Any
    present: torch.Tensor


class PresentCollate:
    """Collate the readable samples of a batch (the unreadable ones are None) into a :class:`Present`."""

    def __init__(self, collate_fn: Optional[Callable] = None):
        self.collate_fn = collate_fn or default_collate

    def __call__(self, samples):
        present = torch.tensor([s is not None for s in samples], dtype=torch.bool)
        kept = [s for s in samples if s is not None]
        return Present(self.collate_fn(kept) if kept else None, present)


class _Progress:
    """Iterate a loader, advancing a tqdm bar by each batch's nominal size."""

    def __init__(self, loader: DataLoader, bar):
        self.loader, self.bar = loader, bar

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for item in self.loader:
            yield item
            if self.bar is not None:
                self.bar.update(int(item.present.numel()))


def shard_loader(dataset, shard: Shard, batch_size: int, workers: int, device: torch.device, bad_log: str,
                 collate_fn: Optional[Callable] = None, split: str = "job", bar=None):
    """Batches of ``batch_size`` consecutive items of ``shard`` (the same batches as one loader over the
    whole dataset would form), unreadable files logged to ``bad_log`` and left out: yields :class:`Present`."""
    keyed = KeyedDataset(dataset, bad_log=bad_log, split=split, replace=False)
    batches = [list(range(s, min(s + batch_size, shard.stop))) for s in range(shard.start, shard.stop, batch_size)]
    loader = DataLoader(keyed, batch_sampler=batches, num_workers=int(workers), collate_fn=PresentCollate(collate_fn),
                        pin_memory=device.type == "cuda")
    return _Progress(loader, bar)


def split_present(item) -> Tuple[Any, Optional[torch.Tensor]]:
    """``(batch, present)`` of a :class:`Present` item, ``(item, None)`` of a plain loader's batch."""
    if isinstance(item, Present):
        return item.batch, item.present
    return item, None


def file_inputs(items: Sequence[Any]) -> List[Any]:
    """What a shard's items are made of: every string of an item (a path, or a tuple of paths and labels)
    replaced by the file's :func:`fingerprint`, other values (labels) kept."""
    out = []
    for item in items:
        parts = item if isinstance(item, (tuple, list)) else (item,)
        out.append([fingerprint(v) if isinstance(v, str) else v for v in parts])
    return out


def log_summary(report: JobReport) -> None:
    """Print the job's summary line (rank 0) and name the unreadable files."""
    print(report.summary(), flush=True)
    for path, reason in report.unreadable[:20]:
        log.warning("skipped unreadable image %s: %s", path, reason)
    if len(report.unreadable) > 20:
        log.warning("... and %d more unreadable images", len(report.unreadable) - 20)

"""The run folder (``train.out_dir``) before a run writes into it: one run at a time, earlier runs kept.

* :class:`RunLock`: ``<out_dir>/run.lock`` holds the host, pid and start time of the run writing there.
  It is taken with ``flock`` (released by the kernel when the holder dies, even by SIGKILL), so a second run
  into the same folder refuses with a message naming the folder and the holder, and the lock of a dead run
  on this host is taken over (with a warning). A lock file left by a run on another host cannot be checked
  from here: the run refuses and says how to override (``VITMIX_BREAK_LOCK=1`` / ``--break-lock``), except
  when it is an earlier incarnation of the same (requeued) SLURM job or another process of the same torchrun
  job (its rendezvous id: an earlier worker group that torchrun stopped before restarting, or a node
  joining an elastic job). On a file system without locks the holder's pid is checked (same host) instead.
* :func:`move_earlier_run_aside`: a run that starts from scratch in a folder holding an earlier run moves
  that run, whole and intact, to ``<out_dir>/history/<UTC time>/`` first, so a folder never mixes two runs.
* :func:`prepare_run_folder`: both, and the checkpoint to resume from (the newest intact one), done by
  rank 0 only; every rank gets the outcome (or the same error). A worker group that torchrun restarted
  (``--max-restarts``, a node lost or joining) resumes from the folder's newest checkpoint whatever
  ``train.resume`` says (:func:`.runlog.restarted_group`).

Errors that the user fixes by changing the command are :class:`RunFolderError` (exit status 2).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from typing import Any, Dict, List, Optional, Tuple

from .. import dist as du
from ..checkpoint.resume import CKPT_DIR, CheckpointDamaged, find_intact_checkpoint, list_checkpoints
from .runlog import mark_prepared, restarted_group

try:
    import fcntl
except ImportError:  # Windows: no flock, the pid check only
    fcntl = None

log = logging.getLogger("pretrain")

LOCK = "run.lock"
HISTORY = "history"
BREAK_LOCK_ENV = "VITMIX_BREAK_LOCK"
LOCK_WAIT_ENV = "VITMIX_LOCK_WAIT_S"  # how long a restarted group waits for its earlier incarnation's lock
# what a run writes at the top of its folder: a folder holding one of these holds an earlier run
RUN_MARKERS = ("config.yaml", "summary.json", "metrics.jsonl", "steps.jsonl", "train.log", "model.safetensors",
               CKPT_DIR)


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (a file, locked by another run, ...): change the command."""


def check_out_dir(out_dir: str) -> None:
    """``out_dir`` exists as a folder afterwards, or a :class:`RunFolderError` names it and why not."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise RunFolderError(f"train.out_dir {out_dir} is a file, not a folder: choose another train.out_dir "
                             "(or move the file away)")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        parent = next((p for p in _parents(out_dir) if os.path.exists(p) and not os.path.isdir(p)), None)
        why = f"{parent} is a file" if parent else (exc.strerror or str(exc))
        raise RunFolderError(f"cannot create train.out_dir {out_dir}: {why}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise RunFolderError(f"train.out_dir {out_dir} is not writable by this user")


def _parents(path: str) -> List[str]:
    out, p = [], os.path.abspath(path)
    while os.path.dirname(p) != p:
        p = os.path.dirname(p)
        out.append(p)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _slurm_job() -> Optional[str]:
    job = os.environ.get("SLURM_JOB_ID")
    return f"{job}.{os.environ.get('SLURM_RESTART_COUNT', '0')}" if job else None


def describe_holder(info: Dict[str, Any]) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if isinstance(started, (int, float)) else "?"
    job = f", SLURM job {info['slurm_job']}" if info.get("slurm_job") else ""
    if info.get("elastic_run") not in (None, "", "none"):
        job += f", torchrun job {info['elastic_run']}"
    return f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started {when}{job}"


class RunLock:
    """The lock of one run folder (``<out_dir>/run.lock``); :meth:`acquire` / :meth:`release`, or a context
    manager. ``break_lock`` (or ``VITMIX_BREAK_LOCK=1``) takes over a lock file whose holder cannot be
    checked from this host; a live holder on this host is never overridden.

    ``job``: the torchrun job (rendezvous id) this process belongs to, ``TORCHELASTIC_RUN_ID`` by default: a
    holder of the same job is not another run (a probe passes; a lock file it left is taken over).
    ``rejoin``: this is a worker group torchrun restarted: a lock its earlier incarnation still holds (the
    processes torchrun is stopping, their loader workers) is waited for, up to ``VITMIX_LOCK_WAIT_S``
    (120) seconds."""

    def __init__(self, out_dir: str, break_lock: Optional[bool] = None, job: Optional[str] = None,
                 rejoin: bool = False):
        self.out_dir = out_dir
        self.job = job if job is not None else os.environ.get("TORCHELASTIC_RUN_ID")
        self.restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
        self.rejoin = rejoin
        self.path = os.path.join(out_dir, LOCK)
        self.break_lock = break_lock if break_lock is not None else os.environ.get(BREAK_LOCK_ENV, "") in (
            "1", "true", "yes")
        self.fd: Optional[int] = None
        self.host = socket.gethostname()
        self.taken_over: Optional[Dict[str, Any]] = None

    def _read(self, fd: int) -> Dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            raw += chunk
        try:
            info = json.loads(raw.decode() or "{}")
        except (UnicodeDecodeError, ValueError):
            return {"host": "?", "unreadable": True}
        return info if isinstance(info, dict) else {"host": "?", "unreadable": True}

    def _refuse(self, info: Dict[str, Any], why: str) -> RunFolderError:
        return RunFolderError(f"train.out_dir {self.out_dir} is in use by another run ({describe_holder(info)}): "
                              f"{why}. Wait for it or stop it, or choose another train.out_dir")

    def _same_job(self, info: Dict[str, Any]) -> bool:
        """The holder is a process of this torchrun job (a named rendezvous id, not torchrun's "none")."""
        return self.job not in (None, "", "none") and info.get("elastic_run") == self.job

    def _earlier_incarnation(self, info: Dict[str, Any]) -> bool:
        """(A restarted group) the holder is a process of this job's earlier worker group."""
        if self._same_job(info):
            return True
        if info.get("host") == self.host and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]):
            return True  # its loader workers still hold the flock for a moment
        return self.job is not None and info.get("elastic_run") == self.job and \
            isinstance(info.get("elastic_restart"), int) and info["elastic_restart"] < self.restart

    def acquire(self, probe: bool = False) -> "RunLock":
        """Take the lock (``probe``: only check that it could be taken, and leave it free)."""
        flocked = False
        attempts, waited = 0, False
        deadline = time.monotonic() + float(os.environ.get(LOCK_WAIT_ENV, "120"))
        while True:
            attempts += 1
            if attempts > 20 and (not waited or time.monotonic() > deadline):
                raise RunFolderError(f"cannot take the run lock {self.path}: it keeps being replaced")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    flocked = True
                except BlockingIOError:
                    info = self._read(fd)
                    os.close(fd)
                    if probe and self._same_job(info):
                        return self  # this job runs there already: a node joining it
                    if not info and attempts <= 20:  # another node's probe, or a run writing its name
                        time.sleep(0.1)
                        continue
                    if self.rejoin and self._earlier_incarnation(info) and time.monotonic() < deadline:
                        if not waited:
                            log.warning("run folder %s: waiting for the stopped worker group (%s) to release "
                                        "the run lock", self.out_dir, describe_holder(info))
                        waited = True
                        time.sleep(0.5)
                        continue
                    why = "it holds the run lock " + self.path
                    if info.get("host") == self.host and isinstance(info.get("pid"), int) and \
                            not _pid_alive(info["pid"]):
                        why = (f"pid {info['pid']} has exited, but processes it started (loader workers) still "
                               f"hold the run lock {self.path}; they exit within seconds: retry")
                    raise self._refuse(info, why) from None
                except OSError as exc:  # a file system without locks: the pid check below
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        os.close(fd)
                        raise
            try:  # the file we locked is still the lock (not one a releasing run just removed)
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        info = self._read(fd)
        if info:
            try:
                self._judge(info, flocked)
            except BaseException:
                os.close(fd)
                raise
        if probe:
            if not info:
                os.unlink(self.path)
            os.close(fd)
            return self
        self.fd = fd
        mine = {"host": self.host, "pid": os.getpid(), "started": time.time(),
                "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "slurm_job": _slurm_job()}
        if "TORCHELASTIC_RUN_ID" in os.environ:
            mine.update(elastic_run=self.job, elastic_restart=self.restart)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(mine) + "\n").encode())
        os.fsync(fd)
        if info:
            self.taken_over = info
            log.warning("run folder %s: took over the lock of a run that is gone (%s)", self.out_dir,
                        describe_holder(info))
        return self

    def _judge(self, info: Dict[str, Any], flocked: bool) -> None:
        """The file names a holder but we got the flock (or have no flock): is the holder gone?"""
        if info.get("pid") == os.getpid() and info.get("host") == self.host:
            return
        same_host = info.get("host") == self.host
        if same_host and flocked:
            return  # its flock was released by the kernel: the holder died
        if same_host and isinstance(info.get("pid"), int):
            if not _pid_alive(info["pid"]):
                return
            if not self.break_lock:
                raise self._refuse(info, "its process is alive (this file system has no flock)")
            return
        job, theirs = _slurm_job(), info.get("slurm_job")
        if job and theirs and job.split(".")[0] == theirs.split(".")[0] and job != theirs:
            return  # an earlier incarnation of this requeued SLURM job: SLURM ended it before restarting
        if self._same_job(info) or (self.rejoin and self._earlier_incarnation(info)):
            return  # a process of this torchrun job, which torchrun stopped before restarting the group
        if self.break_lock:
            return
        raise self._refuse(info, f"its lock file {self.path} was written on another host, which this host "
                                 "cannot check. If that run is dead, start again with --break-lock (or "
                                 f"{BREAK_LOCK_ENV}=1), or delete {self.path}")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # still holding the flock: a waiting run re-checks the inode and retries
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def holds_earlier_run(out_dir: str) -> bool:
    return os.path.isdir(out_dir) and any(os.path.exists(os.path.join(out_dir, n)) for n in RUN_MARKERS)


def move_earlier_run_aside(out_dir: str) -> Optional[str]:
    """Move what an earlier run left in ``out_dir`` (everything but ``history/`` and the lock) into
    ``out_dir/history/<UTC time>/``; returns that folder, or None when ``out_dir`` holds no run."""
    if not holds_earlier_run(out_dir):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    aside = os.path.join(out_dir, HISTORY, stamp)
    n = 1
    while os.path.exists(aside):
        n += 1
        aside = os.path.join(out_dir, HISTORY, f"{stamp}-{n}")
    os.makedirs(aside)
    for name in sorted(os.listdir(out_dir)):
        if name in (HISTORY, LOCK):
            continue
        os.replace(os.path.join(out_dir, name), os.path.join(aside, name))
    return aside


def quarantine_damaged(out_dir: str, ckpt: str) -> List[str]:
    """Rename the checkpoints newer than ``ckpt`` (the damaged ones a fallback passed over) to
    ``checkpoints/damaged-step_N`` (kept for inspection, never resumed from or pruned)."""
    moved = []
    for c in list_checkpoints(out_dir):
        if os.path.abspath(c) == os.path.abspath(ckpt):
            break
        dst = os.path.join(os.path.dirname(c), "damaged-" + os.path.basename(c))
        if os.path.exists(dst):
            dst += f"-{int(time.time())}"
        os.replace(c, dst)
        moved.append(dst)
    return moved


def choose_checkpoint(resume: Optional[str], out_dir: str) -> Tuple[Optional[str], List[str]]:
    """(checkpoint folder, damaged ones passed over) that ``train.resume`` designates: None for null,
    ``auto`` (``out_dir``'s newest intact checkpoint, or None when it has none), or a run / checkpoint folder
    (an error when it has none)."""
    if resume in (None, "", "none", False):
        return None, []
    if resume == "auto":
        ckpt, damaged = find_intact_checkpoint(out_dir) if os.path.isdir(out_dir) else (None, [])
        if ckpt is None:
            log.info("resume=auto: no checkpoint in %s, starting from scratch", out_dir)
        return ckpt, damaged
    if not os.path.exists(resume):
        raise FileNotFoundError(f"train.resume: {resume} does not exist")
    ckpt, damaged = find_intact_checkpoint(resume)
    if ckpt is None:
        raise FileNotFoundError(f"train.resume: no checkpoint in {resume} (expected {resume}/checkpoints/latest "
                                "or a checkpoints/step_* folder)")
    return ckpt, damaged


def keep_checkpoints(tc: Dict[str, Any]) -> int:
    keep = tc.get("keep_checkpoints", 2)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise RunFolderError(f"train.keep_checkpoints must be an integer >= 1, got {keep!r}")
    return keep


def preflight(cfg: Dict[str, Any], check_lock: bool = True) -> None:
    """What the launcher checks before starting processes: the folder and the lock (not taken)."""
    tc = cfg["train"]
    keep_checkpoints(tc)
    resume = tc.get("resume")
    if resume not in (None, "", "none", "auto") and not os.path.exists(resume):
        raise RunFolderError(f"train.resume: {resume} does not exist")
    check_out_dir(tc["out_dir"])
    if check_lock:
        RunLock(tc["out_dir"]).acquire(probe=True)


def restart_checkpoint(resume: Optional[str], out_dir: str) -> Tuple[Optional[str], List[str]]:
    """What a restarted worker group resumes from: ``out_dir``'s newest intact checkpoint (the progress of
    its earlier incarnation), else what ``train.resume`` designates (null: start from scratch again)."""
    ckpt, damaged = choose_checkpoint("auto", out_dir)
    if ckpt is not None:
        if resume not in (None, "", "none", "auto", False):
            log.info("a restarted worker group: resuming from %s (its own progress), not train.resume=%s", ckpt,
                     resume)
        return ckpt, damaged
    return choose_checkpoint(resume, out_dir)


def _prepare(cfg: Dict[str, Any], restarted: bool = False) -> Tuple[Optional[str], Optional[RunLock]]:
    tc = cfg["train"]
    out_dir = tc["out_dir"]
    keep_checkpoints(tc)
    check_out_dir(out_dir)
    lock = RunLock(out_dir, rejoin=restarted).acquire()
    try:
        if restarted:
            ckpt, damaged = restart_checkpoint(tc.get("resume"), out_dir)
            log.warning("torchrun restarted the worker group: %s", f"resuming from {ckpt}" if ckpt else
                        "no checkpoint yet, starting again")
        else:
            ckpt, damaged = choose_checkpoint(tc.get("resume"), out_dir)
        for reason in damaged:
            log.warning("checkpoint passed over: %s; resuming from the newest intact one, %s", reason, ckpt)
        inside = ckpt is not None and os.path.abspath(ckpt).startswith(
            os.path.abspath(os.path.join(out_dir, CKPT_DIR)) + os.sep)
        if damaged and inside:
            for q in quarantine_damaged(out_dir, ckpt):
                log.warning("the damaged checkpoint is kept as %s (remove it when done)", q)
        if not inside and not restarted:  # a fresh run, or one seeded elsewhere: this folder starts empty
            aside = move_earlier_run_aside(out_dir)
            if aside:
                log.warning("%s held an earlier run and %s: it was moved, intact, to %s (continue a run with "
                            "--resume auto; remove old history/ folders to free the space)", out_dir,
                            "train.resume is not set" if ckpt is None else f"this run starts from {ckpt}", aside)
    except BaseException:
        lock.release()
        raise
    return ckpt, lock


def prepare_run_folder(cfg: Dict[str, Any], rank: int) -> Tuple[Optional[str], Optional[RunLock]]:
    """[collective] Rank 0 checks ``train.out_dir``, takes its lock, chooses the checkpoint to resume from
    and moves an earlier run aside; every rank returns the checkpoint (rank 0 also the lock to release
    at the end), or raises the same error. When torchrun restarted the worker group (any rank knows it:
    :func:`.runlog.restarted_group`), the group resumes from the folder's newest checkpoint and rank 0 may
    take over the lock of the group it replaces, wherever that one ran."""
    restarted = any(du.gather_objects(restarted_group()))
    outcome: Dict[str, Any] = {}
    lock = None
    error: Optional[BaseException] = None
    if rank == 0:
        try:
            ckpt, lock = _prepare(cfg, restarted)
            outcome = {"ckpt": ckpt}
        except Exception as exc:  # noqa: BLE001 - every rank must learn of it
            error = exc
            outcome = {"error": type(exc).__name__, "message": str(exc)}
    outcome = du.gather_objects(outcome)[0]
    if error is not None:
        raise error
    if "error" in outcome:
        kinds = {"RunFolderError": RunFolderError, "FileNotFoundError": FileNotFoundError,
                 "CheckpointDamaged": CheckpointDamaged, "ValueError": ValueError}
        raise kinds.get(outcome["error"], RuntimeError)(outcome["message"])
    mark_prepared()
    return outcome["ckpt"], lock

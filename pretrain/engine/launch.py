"""torchrun with the trainer's exit statuses: ``python -m pretrain.engine.launch [torchrun options] -- ARGS``
starts ``python -m pretrain.train ARGS`` under torchrun (what ``tools/pretrain.sh`` runs).

Compared with calling torchrun directly:

* the command is checked first, in this process (config, ``train.out_dir`` not a file, its run lock free):
  an error is one line on stderr and exit status 2, with no process started. The lock is checked on node 0
  with a static rendezvous (``--node-rank``); with a c10d/etcd rendezvous the rendezvous assigns the node
  ranks, so every node checks it, and a lock held by a process of the same job (``--rdzv-id``: a node
  joining an elastic job) passes;
* the exit status is the trainer's: 75 when a SIGTERM/SIGUSR1 (to this launcher or to the trainers)
  stopped the run after its checkpoint, 2 for an error in the command, 1 otherwise, instead of torchrun's
  1 and its traceback;
* the trainers die with this launcher, even when it is killed with SIGKILL
  (:func:`pretrain.engine.runlog.die_with_launcher`);
* with ``--max-restarts N``, the worker group torchrun restarts after a failure (a trainer or a node lost)
  resumes from the run folder's newest checkpoint (:func:`pretrain.engine.runfolder.prepare_run_folder`);
  the exit status is that of the last group.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

from ..dist import STATIC_RDZV_ENV
from .runlog import LAUNCHER_PID_ENV, STATUS_DIR_ENV

INTERRUPTED = 75
CONFIG_ERROR = 2
LAUNCHER_OPTIONS = ("--nproc", "--nproc-per-node", "--nproc_per_node", "--nnodes", "--node-rank", "--node_rank",
                    "--master-addr", "--master_addr", "--master-port", "--master_port", "--rdzv-backend",
                    "--rdzv_backend", "--rdzv-endpoint", "--rdzv_endpoint", "--rdzv-id", "--rdzv_id", "--rdzv-conf",
                    "--rdzv_conf", "--max-restarts", "--max_restarts", "--standalone")


def _option(torchrun_args: List[str], *flags: str) -> Optional[str]:
    """The value of a torchrun option (``--flag V`` or ``--flag=V``; the last one given), None if absent."""
    value = None
    for i, a in enumerate(torchrun_args):
        for flag in flags:
            if a == flag and i + 1 < len(torchrun_args):
                value = torchrun_args[i + 1]
            elif a.startswith(flag + "="):
                value = a.split("=", 1)[1]
    return value


def _node_rank(torchrun_args: List[str]) -> int:
    return int(_option(torchrun_args, "--node-rank", "--node_rank") or 0)


def _rendezvous(torchrun_args: List[str]) -> Optional[Tuple[str, str]]:
    """(backend, job id) of a dynamic rendezvous (c10d, etcd: it assigns the node ranks), None for torchrun's
    static one (``--node-rank``) and ``--standalone`` (one node)."""
    if "--standalone" in torchrun_args:
        return None
    backend = _option(torchrun_args, "--rdzv-backend", "--rdzv_backend") or "static"
    if backend == "static":
        return None
    return backend, _option(torchrun_args, "--rdzv-id", "--rdzv_id") or "none"


def lock_check(torchrun_args: List[str]) -> Tuple[bool, Optional[str]]:
    """(whether this node checks the run lock before starting, the job id a lock may hold and pass): node 0
    of a static rendezvous, every node of a dynamic one (which node gets rank 0 is the rendezvous' choice),
    where a lock held by the same job id is a node joining that job."""
    rdzv = _rendezvous(torchrun_args)
    if rdzv is None:
        return _node_rank(torchrun_args) == 0, None
    return True, rdzv[1]


def _statuses(folder: str) -> Dict[int, Tuple[int, str]]:
    """{rank: (exit status, its one-line error message or "")} left by the trainers of the last worker group
    (:func:`pretrain.engine.runlog.group_key`)."""
    out: Dict[int, Tuple[int, str]] = {}
    groups = [os.path.join(folder, n) for n in os.listdir(folder) if n.startswith("group")]
    groups = [g for g in groups if os.path.isdir(g)]
    if not groups:
        return out
    last = max(groups, key=lambda g: os.stat(g).st_mtime_ns)
    for name in os.listdir(last):
        if name.startswith("rank"):
            try:
                with open(os.path.join(last, name)) as f:
                    code, _, msg = f.read().partition("\n")
                out[int(name[4:])] = (int(code.strip()), msg.strip())
            except (OSError, ValueError):
                pass
    return out


class _DropFailedLine(logging.Filter):
    """torchrun's "failed (exitcode: N) local_rank: ..." line: the launcher says it in its own words."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("failed (exitcode")


def combine(codes: List[int]) -> int:
    """One exit status for the processes' statuses (0 when all succeeded)."""
    failed = [c for c in codes if c != 0]
    if not failed:
        return 0
    if CONFIG_ERROR in failed:
        return CONFIG_ERROR
    if all(c == INTERRUPTED for c in failed):
        return INTERRUPTED
    signalled = [c for c in failed if c < 0]  # killed by a signal: the shell's 128 + N
    if signalled and len(signalled) == len(failed):
        return 128 - signalled[0]
    return next((c for c in failed if c not in (INTERRUPTED,) and c > 0), 1)


def _say(msg: str) -> None:
    print(f"pretrain.sh: {msg}", file=sys.stderr, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        _say("usage: python -m pretrain.engine.launch [torchrun options] -- --config CONFIG [...]")
        return CONFIG_ERROR
    cut = argv.index("--")
    torchrun_args, trainer_args = argv[:cut], argv[cut + 1:]
    from ..train import CommandError, check_command
    from .runfolder import RunFolderError, RunLock
    misplaced = [a for a in trainer_args if a.split("=")[0] in LAUNCHER_OPTIONS]
    if misplaced:
        _say(f"launcher option {misplaced[0]} after CONFIG: launcher options go before it "
             "(tools/pretrain.sh --nproc 8 CONFIG key=value ...)")
        return CONFIG_ERROR
    check_lock, job = lock_check(torchrun_args)
    try:
        cfg = check_command(trainer_args, check_lock=False, prog="tools/pretrain.sh CONFIG")
        if check_lock:
            RunLock(cfg["train"]["out_dir"], job=job).acquire(probe=True)
    except CommandError as exc:
        print(exc, file=sys.stderr, flush=True)
        return CONFIG_ERROR
    except RunFolderError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return CONFIG_ERROR

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_DropFailedLine())
    status_dir = tempfile.mkdtemp(prefix="vitmix-status-")
    os.environ[STATUS_DIR_ENV] = status_dir
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    # a restarted worker group must not meet its predecessor's peer addresses in a store kept across groups:
    # a fresh store per group (dynamic rendezvous; torchrun shares one by default), or a prefix per restart
    # (static rendezvous, pretrain.dist._restarted_group_store)
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    if _rendezvous(torchrun_args) is None and "--standalone" not in torchrun_args:
        os.environ[STATIC_RDZV_ENV] = "1"
    try:
        torchrun.main(torchrun_args + ["-m", "pretrain.train"] + trainer_args)
        return 0
    except ChildFailedError as exc:
        reported = {rank: f.exitcode for rank, f in exc.failures.items()}
        statuses = _statuses(status_dir)
        code = combine(list({**reported, **{r: c for r, (c, _) in statuses.items()}}.values()) or [1])
        first_rank, first = exc.get_first_failure()
        said = next((m for _, (c, m) in sorted(statuses.items()) if c not in (0, INTERRUPTED) and m), "")
        if code == INTERRUPTED:
            _say("stopped by a signal after writing a checkpoint: continue with --resume auto")
        elif code != CONFIG_ERROR:  # a config error was said in one line by the trainer already
            how = f"killed by {signal.Signals(-first.exitcode).name}" if first.exitcode < 0 else \
                f"exited with status {first.exitcode}"
            tail = f": {said}" if said else (" (its messages are above)" if first.exitcode > 0 else
                                             "; its last checkpoint is complete: --resume auto continues")
            _say(f"the run failed: rank {first_rank} {how}{tail}")
        return code
    except SignalException as exc:  # torchrun itself got the signal; it passed it on and waited for the trainers
        statuses = {r: c for r, (c, _) in _statuses(status_dir).items()}
        if statuses and combine(list(statuses.values())) == INTERRUPTED:
            _say(f"stopped by {signal.Signals(exc.sigval).name} after writing a checkpoint: continue with "
                 "--resume auto")
            return INTERRUPTED
        if statuses and combine(list(statuses.values())) == 0:
            return 0
        _say(f"stopped by {signal.Signals(exc.sigval).name}")
        return 128 + int(exc.sigval)
    finally:
        shutil.rmtree(status_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

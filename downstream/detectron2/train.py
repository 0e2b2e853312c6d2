"""Train and evaluate a Detectron2 LazyConfig detector (configs/detectron2/).

    vitmix-train-d2 --config-file configs/detectron2/mask_rcnn_vitmix_synthetic.py \\
        model.backbone.pretrained=runs/x/model.safetensors
    vitmix-train-d2 --num-gpus 8 --config-file configs/detectron2/mask_rcnn_vitmix_deit_b_100ep.py \\
        model.backbone.pretrained=runs/deit_b/best.safetensors
    vitmix-train-d2 --eval-only --config-file CFG train.init_checkpoint=runs/d2/model_final.pth

(``python tools/train_d2.py ...`` is the same command.) Trailing ``key=value``
arguments override the config (Detectron2's LazyConfig syntax). What it does,
in Detectron2's own idioms:

1. registers every COCO file in the config's ``datasets`` with
   :func:`downstream.detectron2.register_checked_coco_instances` (checked
   before anything trains; bad entries dropped and counted, or refused);
2. ``instantiate``s the model (the ViT backbone loads ``pretrained`` strictly
   while it is built), the optimizer (layer-decay groups) and the loaders;
3. trains with ``AMPTrainer`` when ``train.amp.enabled`` (CUDA) or
   ``SimpleTrainer``, with the standard hooks (timer, lr scheduler, periodic
   checkpointer, evaluation, metric writers: ``metrics.json`` and
   TensorBoard events), under ``launch`` for multi-GPU; with
   ``train.best_checkpointer.val_metrics`` (e.g. ``["bbox/AP", "segm/AP"]``)
   Detectron2's ``BestCheckpointer`` also keeps the best model per metric
   (``model_best_bbox_AP.pth``, ...; ``last_checkpoint``, which ``--resume``
   reads, keeps pointing at the latest periodic checkpoint);
4. evaluates with ``inference_on_dataset`` and the configured evaluator
   (``COCOEvaluator``: box and mask AP from pycocotools), and writes the
   results to ``<output_dir>/metrics_eval.json``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import List, Optional

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_argument_parser, default_writers, hooks, launch
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from pretrain.checkpoint import CheckpointError

from ..coco_checks import CocoDataError
from .checkpoint import SafeDetectionCheckpointer as DetectionCheckpointer  # weights-only reading, .pkl too
from .data import register_checked_coco_instances

logger = logging.getLogger("vitmix.train_d2")

__all__ = ["main", "parse_args", "register_datasets", "do_test", "do_train", "setup"]


def register_datasets(cfg) -> None:
    """Register the config's ``datasets`` entries (name -> json_file, image_root, on_error)."""

    for name, d in (cfg.get("datasets") or {}).items():
        for key in ("json_file", "image_root"):
            if key not in d:
                raise ValueError(f"datasets.{name} needs '{key}'")
        register_checked_coco_instances(
            name, d["json_file"], d["image_root"], on_error=d.get("on_error", "skip"), classes=d.get("classes")
        )


def do_test(cfg, model):
    """Run the evaluator on ``dataloader.test``; returns the nested metric dict."""

    if "evaluator" not in cfg.dataloader:
        return {}
    if cfg.dataloader.evaluator.get("output_dir", "unset") is None:
        cfg.dataloader.evaluator.output_dir = os.path.join(cfg.train.output_dir, "inference")
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process() and results:
        print_csv_format(results)
        os.makedirs(cfg.train.output_dir, exist_ok=True)
        with open(os.path.join(cfg.train.output_dir, "metrics_eval.json"), "w") as f:
            json.dump(results, f, indent=2)
    return results


class _UntaggedCheckpointer(DetectionCheckpointer):
    """A checkpointer that does not move ``last_checkpoint`` (fvcore's ``save`` would point it at the
    best model, and ``--resume`` would go back to it)."""

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        pass


def _best_checkpointers(cfg, model) -> list:
    """One ``BestCheckpointer`` per ``train.best_checkpointer.val_metrics`` entry (model weights only)."""

    best = cfg.train.get("best_checkpointer") or {}
    metrics = list(best.get("val_metrics") or [])
    if not metrics:
        return []
    ckpt = _UntaggedCheckpointer(model, cfg.train.output_dir)
    mode = best.get("mode", "max")
    return [
        hooks.BestCheckpointer(cfg.train.eval_period, ckpt, m, mode=mode, file_prefix="model_best_" + m.replace("/", "_"))
        for m in metrics
    ]


def do_train(args, cfg) -> None:

    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    logger.info("Model:\n%s", model)
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    if cfg.train.amp.enabled:
        if not torch.cuda.is_available():
            raise RuntimeError("train.amp.enabled=True needs CUDA (Detectron2's AMPTrainer); set train.amp.enabled=False")
        trainer = AMPTrainer(model, train_loader, optim)
    else:
        trainer = SimpleTrainer(model, train_loader, optim)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    main_process = comm.is_main_process()
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main_process else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            *(_best_checkpointers(cfg, model) if main_process else []),  # after EvalHook: reads its metrics
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
            if main_process
            else None,
        ]
    )
    if cfg.train.init_checkpoint:
        logger.warning(
            "train.init_checkpoint=%s is loaded by Detectron2's checkpointer, which ignores missing keys; "
            "pretrained ViT weights belong in model.backbone.pretrained (strict)",
            cfg.train.init_checkpoint,
        )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def setup(cfg, args) -> None:
    """Output directory, loggers, seed and a copy of the resolved config.

    What ``detectron2.engine.default_setup`` does, less its environment dump
    (which needs Detectron2's compiled extension).
    """

    out = cfg.train.output_dir
    rank = comm.get_rank()
    if comm.is_main_process() and out:
        os.makedirs(out, exist_ok=True)
    setup_logger(out, distributed_rank=rank, name="fvcore")
    setup_logger(out, distributed_rank=rank, name="vitmix")
    setup_logger(out, distributed_rank=rank, name="downstream")
    setup_logger(out, distributed_rank=rank)
    logger.info("Rank %d of %d; command line: %s", rank, comm.get_world_size(), " ".join(sys.argv))
    if comm.is_main_process() and out:
        path = os.path.join(out, "config.yaml")
        try:
            LazyConfig.save(cfg, path)
            logger.info("Full config saved to %s", path)
        except Exception as e:  # noqa: BLE001 - a config that cannot be serialised still trains
            logger.warning("could not save the config to %s: %s", path, e)
    seed = cfg.train.get("seed", -1)
    seed_all_rng(None if seed < 0 else seed + rank)


def _worker(args) -> None:
    """One process of the run (``launch`` starts one per GPU)."""

    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    setup(cfg, args)
    register_datasets(cfg)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = create_ddp_model(model)
        if cfg.train.init_checkpoint:
            DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        do_test(cfg, model)
    else:
        do_train(args, cfg)


def parse_args(argv: Optional[List[str]] = None):
    """Detectron2's ``default_argument_parser`` (``--config-file``, ``--num-gpus``, ``--resume``,
    ``--eval-only``, ``KEY=VALUE`` overrides)."""

    parser = default_argument_parser(epilog=__doc__)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``vitmix-train-d2`` and ``tools/train_d2.py``; returns the exit status: 0, or 2 with
    one ``error:`` line for a checkpoint or COCO file that cannot be used (it names the file)."""

    args = parse_args(argv)
    try:
        launch(
            _worker,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except (CheckpointError, CocoDataError) as e:  # in-process (one GPU or CPU); spawned workers print their own
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Are the analysis studies bounded by the model's forward pass?

For each study, runs the real study function over in-memory batches (no disk I/O) and compares
its wall time with the same number of bare forwards, interleaved in the same run (ratio near 1.00:
bounded by the forward; every timing is the fastest of its repeats). It also runs each study with a model whose forward is free (cached
outputs), which isolates what the study adds per forward: masks, shuffles, thresholds, connected
components, metrics; that column is robust to a busy machine.

    python tools/bench_analysis.py                                     # CPU, DeiT-Ti at 224, batch 8
    python tools/bench_analysis.py --device cuda --amp bf16 --model deit_small_patch16_224 --batch-size 256

``--sharded FOLDER`` instead times the occlusion study as the command line runs it (shards of the image
folder, decoding included, :mod:`pretrain.jobs`), in one process or under torchrun, and prints images/s
of the job (process start-up and model building excluded)::

    python tools/bench_analysis.py --sharded data/synthetic/imagenet/val --img-size 64 --batch-size 16
    torchrun --nproc-per-node 2 tools/bench_analysis.py --sharded data/synthetic/imagenet/val --img-size 64 --batch-size 16
"""
from __future__ import annotations

import argparse
import datetime
import time

import timm
import torch

from pretrain.analysis.attention_quality import attention_quality_study
from pretrain.analysis.common import LoadedModel, _finish, parse_amp
from pretrain.analysis.occlusion import occlusion_study
from pretrain.analysis.shuffle import shuffle_study
from pretrain.models.vit import create_vit


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats=1):
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)  # the least-disturbed run: robust on a shared machine


def sharded_throughput(args) -> None:
    """Images/s of the sharded occlusion study over an image folder, on this launch's processes."""
    import tempfile

    from pretrain import jobs
    from pretrain.dist import cleanup, gather_objects
    from pretrain.analysis.common import image_folder, make_loader
    from pretrain.analysis.occlusion import occlusion_counts

    ctx = jobs.start_job(args.device)
    torch.manual_seed(0)  # the same random model on every rank
    lm = _finish(create_vit(args.model, 1000, img_size=args.img_size), args.model, "random init", ctx.device)
    ds = image_folder(args.sharded, lm.img_size, 1.0)
    shards = jobs.make_shards(len(ds), jobs.shard_size_for(args.shard_size, args.batch_size))
    amp = parse_amp(args.amp)
    work = tempfile.mkdtemp(prefix="bench-shards-") if ctx.is_main else None
    work = gather_objects(work)[0]  # one folder, made by rank 0
    store = jobs.ShardStore(work, "bench", {"model": args.model})

    def compute(shard, bad_log, bar):
        loader = jobs.shard_loader(ds, shard, args.batch_size, args.workers, ctx.device, bad_log)
        return occlusion_counts([lm], loader, ctx.device, amp_dtype=amp, skip_batches=shard.start // args.batch_size,
                                batch_size=args.batch_size)

    report = jobs.run_shards("bench", shards, compute, store, lambda s: [], ctx, resume=False)
    plain = ""
    if ctx.world == 1:  # the same study over one plain loader (no shards, no shard files), right after
        loader = make_loader(ds, args.batch_size, args.workers, ctx.device)
        t_plain = _timed(lambda: occlusion_study([lm], loader, ctx.device, amp_dtype=amp), ctx.device)
        plain = f"{t_plain:.2f}"
    if ctx.is_main:
        store.remove(shards)
    jobs.finish_job(work, ctx)
    if ctx.is_main:
        print(f"# {datetime.date.today()} | device {ctx.device} | {ctx.world} process(es) | torch {torch.__version__} | "
              f"model {args.model} {args.img_size}px | batch {args.batch_size} | workers {args.workers} | "
              f"threads {torch.get_num_threads()}")
        print("| study | processes | images | shards | sharded job (s) | img/s | one plain loader, 1 process (s) |")
        print(f"| occlusion (3 modes x 10 ratios) | {ctx.world} | {len(ds)} | {len(shards)} | "
              f"{report.seconds:.2f} | {len(ds) / report.seconds:.1f} | {plain or '-'} |")
    cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_tiny_patch16_224")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=1, help="batches per study run")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved timings of study vs bare forwards")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sharded", default=None, metavar="FOLDER", help="time the sharded occlusion study on this "
                    "ImageNet-layout folder instead (see above)")
    ap.add_argument("--shard-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sharded:
        return sharded_throughput(args)
    device = torch.device(args.device)
    amp = parse_amp(args.amp)
    torch.manual_seed(0)
    lm = _finish(create_vit(args.model, 1000, img_size=args.img_size), args.model, "random init", device)
    b, s = args.batch_size, args.img_size
    images = torch.randn(b, 3, s, s, device=device)
    target = torch.randint(0, 1000, (b,), device=device)
    labels = torch.randint(0, 3, (b, s, s), dtype=torch.uint8, device=device)
    boxes = torch.tensor([[s * 0.2, s * 0.2, s * 0.7, s * 0.8]]).expand(b, 1, 4).clone()
    box_valid = torch.ones(b, 1, dtype=torch.bool)
    cls_loader = [(images, target)] * args.batches

    def bare_forward():
        with torch.inference_mode():
            lm.forward(images, amp)

    bare_forward()  # warm-up
    t_fwd = _timed(bare_forward, device, repeats=3)

    # the same study with a model whose forward is free (cached outputs): what the study adds
    with torch.inference_mode():
        cached_logits, cached_att = lm.forward(images, amp, attention=True)

    class Free(LoadedModel):
        def forward(self, x, amp_dtype=None, attention=False):
            return (cached_logits, cached_att) if attention else cached_logits

    free = Free(name=lm.name, source="cached", model=None, tap=None, img_size=lm.img_size,
                patch_size=lm.patch_size, num_classes=lm.num_classes)

    ratios = [round(0.1 * i, 1) for i in range(10)]

    def studies(m):
        return [
            ("occlusion (3 modes x 10 ratios)", args.batches * (1 + 3 * 9),
             lambda: occlusion_study([m], cls_loader, device, ratios=ratios, amp_dtype=amp)),
            ("shuffle (grid 1, 4, 16, 64, 196)", args.batches * 5,
             lambda: shuffle_study([m], cls_loader, device, grid_sizes=[1, 4, 16, 64, 196], amp_dtype=amp)),
            ("attention quality, 4 keep masses (Jaccard + WSOL)", args.batches * 2,
             lambda: attention_quality_study([m], device, seg_loader=[(images, labels)] * args.batches,
                                             box_loader=[(images.cpu(), boxes, box_valid, target.cpu())] * args.batches,
                                             keep_masses=[0.5, 0.6, 0.7, 0.9], amp_dtype=amp)),
        ]

    print(f"# {datetime.date.today()} | device {device} | torch {torch.__version__} | timm {timm.__version__} | "
          f"model {args.model} {s}px | batch {b} | amp {args.amp} | threads {torch.get_num_threads()}")
    print(f"bare forward: {1000 * t_fwd:.1f} ms per batch ({b / t_fwd:.1f} img/s)")
    print("| study | forwards | study (s) | same forwards alone (s) | ratio | non-forward work per forward (ms) "
          "| non-forward / forward |")
    print("|---|---|---|---|---|---|---|")
    for (name, n_fwd, fn), (_, _, fn_free) in zip(studies(lm), studies(free)):
        fn_free()
        t_free = _timed(fn_free, device, repeats=5)
        t_fwd_here = _timed(bare_forward, device, repeats=3)  # right beside it: the load is the same
        t_study, t_alone = [], []
        for _ in range(args.repeats):  # interleaved, so that load changes hit both alike
            t_study.append(_timed(fn, device))
            t_alone.append(_timed(lambda: [bare_forward() for _ in range(n_fwd)], device))
        t, alone = min(t_study), min(t_alone)
        print(f"| {name} | {n_fwd} | {t:.3f} | {alone:.3f} | {t / alone:.2f} | {1000 * t_free / n_fwd:.2f} | "
              f"{t_free / n_fwd / t_fwd_here:.3f} |")

if __name__ == "__main__":
    main()

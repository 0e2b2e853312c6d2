"""Side jobs under torchrun (2 CPU processes, gloo): the label-map tool and the analysis studies give the
files of a single-process run, resume after a SIGKILL without redoing finished shards, recompute shards
whose inputs changed, and count and skip unreadable images."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from pretrain import jobs
from pretrain.checkpoint import save_weights
from pretrain.models.vit import create_vit, vit_arch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "deit_tiny_patch16_224"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def _torchrun(args, timeout=300):
    """``python -m torch.distributed.run --nproc-per-node 2 ARGS`` as tests/test_pretrain_ddp.py launches it."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                           "--nproc-per-node=2", *args], env=ENV, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _files(folder, names):
    return {n: (folder / n).read_bytes() for n in names}


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = create_vit(NAME, 4, img_size=32, patch_size=8, depth=1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_weights(str(path), m.state_dict(), vit_arch(m, NAME))
    return str(path)


@pytest.fixture(scope="module")
def fitted_ckpt(tmp_path_factory, synthetic_root):
    """A 2-block 32 px ViT fitted a little to the synthetic train split, so that its predictions differ per
    image and the random drops and shuffles change its accuracy."""
    from torchvision.datasets import ImageFolder
    from torchvision import transforms as T

    ds = ImageFolder(str(synthetic_root / "imagenet" / "train"), transform=T.Compose([
        T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor(ds.targets)
    torch.manual_seed(1)
    m = create_vit(NAME, 4, img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2)
    with torch.no_grad():
        m.pos_embed.normal_(0, 0.5)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("fitted") / "fitted.safetensors"
    save_weights(str(path), m.eval().state_dict(), vit_arch(m, NAME))
    return str(path)


def _train_copy(synthetic_root, dest, per_class=6):
    """A few images per class of the synthetic train split, plus a truncated PNG and a zero-byte file."""
    src = synthetic_root / "imagenet" / "train"
    for c in sorted(os.listdir(src)):
        os.makedirs(dest / c)
        for f in sorted(os.listdir(src / c))[:per_class]:
            shutil.copy(src / c / f, dest / c / f)
    c0 = sorted(os.listdir(dest))[0]
    data = (dest / c0 / sorted(os.listdir(dest / c0))[0]).read_bytes()
    (dest / c0 / "zz_truncated.png").write_bytes(data[: len(data) // 2])
    (dest / sorted(os.listdir(dest))[1] / "zz_empty.png").write_bytes(b"")
    return dest


MAP_FILES = ("maps.npy", "index.txt", "meta.json")


@pytest.mark.slow
def test_label_maps_killed_then_resumed_on_two_processes_equal_one_uninterrupted_run(synthetic_root, teacher_ckpt,
                                                                                     tmp_path, capsys):
    from pretrain.mixing.label_maps_cli import main

    data = _train_copy(synthetic_root, tmp_path / "train")  # 24 good + 2 unreadable = 26 images
    common = ["--data", str(data), "--teacher-checkpoint", teacher_ckpt, "--device", "cpu", "--workers", "0",
              "--batch-size", "2", "--shard-size", "4"]  # 7 shards of 4 images (the last one 2)
    assert main([*common, "--out", str(tmp_path / "ref"), "--progress", "on"]) == 0
    captured = capsys.readouterr()
    assert "label_maps (rank 0 of 1)" in captured.err and "26/26" in captured.err  # the tqdm bar, forced on
    assert "7 shard(s): 7 computed, 0 skipped" in captured.out and "2 unreadable image(s) skipped" in captured.out
    ref = _files(tmp_path / "ref", MAP_FILES)
    meta = json.loads(ref["meta.json"])
    index = ref["index.txt"].decode().split()
    bad = sorted(p for p, _ in meta["unreadable"])
    assert len(index) == 26 and bad == sorted(p for p in index if "zz_" in p)
    maps = np.load(tmp_path / "ref" / "maps.npy")
    rows = [index.index(p) for p in bad]
    assert not maps[rows].any() and all(maps[i].sum() > 0 for i in range(26) if i not in rows)
    assert not (tmp_path / "ref" / ".shards").exists()  # shards dropped once the maps are written

    # killed (SIGKILL) right after its second finished shard
    out = tmp_path / "resumed"
    driver = tmp_path / "killed.py"
    driver.write_text(textwrap.dedent(f"""
        import os, signal, sys
        from pretrain import jobs
        from pretrain.mixing.label_maps_cli import main
        save, done = jobs.ShardStore.save, []
        def save_then_die(self, *args, **kwargs):
            save(self, *args, **kwargs)
            done.append(1)
            if len(done) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        jobs.ShardStore.save = save_then_die
        sys.exit(main({[*common, "--out", str(out)]!r}))
    """))
    proc = subprocess.run([sys.executable, str(driver)], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    shard_files = sorted((out / ".shards" / "label_maps").glob("label_maps-*.pt"))
    assert [p.name[:16] for p in shard_files] == ["label_maps-00000", "label_maps-00001"]
    assert not (out / "maps.npy").exists()
    mtimes = {p.name: p.stat().st_mtime_ns for p in shard_files}

    # the rerun on 2 processes skips the 2 finished shards and ends with the uninterrupted run's files
    proc = _torchrun(["tools/make_label_maps.py", *common, "--out", str(out), "--keep-shards"])
    # shards 2, 4, 6 on rank 0 and 3, 5 on rank 1
    assert "7 shard(s): 5 computed (3 + 2 on 2 ranks), 2 skipped (finished before)" in proc.stdout, proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in shard_files} == mtimes
    assert _files(out, MAP_FILES) == ref
    assert "zz_empty.png" in proc.stderr and "unreadable image skipped" in proc.stderr  # logged, naming the file

    # other parameters: no shard is reused; one changed image: only its shard is recomputed
    assert main([*common, "--out", str(out), "--keep-shards", "--classes", "pred"]) == 0
    assert "7 shard(s): 7 computed, 0 skipped" in capsys.readouterr().out
    img = data / index[5]
    img.write_bytes(img.read_bytes())  # same bytes, new modification time
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    assert main([*common, "--out", str(out), "--keep-shards", "--classes", "pred"]) == 0
    assert "7 shard(s): 1 computed, 6 skipped" in capsys.readouterr().out
    # ViT attention maps do not depend on --classes: only meta.json's "classes" changed
    assert _files(out, MAP_FILES[:2]) == {k: ref[k] for k in MAP_FILES[:2]}
    assert json.loads((out / "meta.json").read_text()) == {**meta, "classes": "pred"}


@pytest.mark.slow
def test_every_study_on_two_processes_writes_the_files_of_one(synthetic_root, fitted_ckpt, tmp_path, capsys):
    from pretrain.analysis.cli import run

    out = tmp_path / "analysis"
    args = ["all", "--data", str(synthetic_root), "--out", str(out), "--device", "cpu", "--workers", "0",
            "--batch-size", "8", "--shard-size", "16", "--ckpt", f"a={fitted_ckpt}"]
    run(args)
    names = [f"{s}.{e}" for s in ("occlusion", "shuffle", "natural_adversarial", "attention") for e in ("csv", "json")]
    names.append("summary.json")
    ref = _files(out, names)
    occ = json.loads(ref["occlusion.json"])["rows"]
    top1 = {(r["mode"], r["ratio"]): r["top1"] for r in occ}
    assert len(set(top1.values())) > 3  # the drops change the accuracy: the random draws matter
    # the shards (and their replayed random draws) give the rows of one pass over one loader
    from pretrain.analysis import load_classifier, occlusion_study, shuffle_study
    from pretrain.analysis.common import image_folder, make_loader

    model = load_classifier(fitted_ckpt, name="a")
    loader = make_loader(image_folder(str(synthetic_root / "imagenet" / "val"), model.img_size, 1.0), 8, 0,
                         torch.device("cpu"))
    cpu = torch.device("cpu")
    assert occlusion_study([model], loader, cpu) == occ
    assert shuffle_study([model], loader, cpu, grid_sizes=[1, 4, 16]) == json.loads(ref["shuffle.json"])["rows"]
    for f in out.iterdir():
        if f.name in names:
            f.unlink()
    proc = _torchrun(["tools/analyze.py", *args])
    # 32 val images: 2 shards of 2 batches, the second one replaying the first one's draws
    assert "occlusion: 2 shard(s): 2 computed (1 + 1 on 2 ranks)" in proc.stdout
    assert _files(out, names) == ref


def test_a_study_resumes_from_its_shards_and_counts_unreadable_images(synthetic_root, fitted_ckpt, tmp_path,
                                                                      capsys):
    from pretrain.analysis.cli import run

    val = tmp_path / "val"
    shutil.copytree(synthetic_root / "imagenet" / "val", val)
    c0 = sorted(os.listdir(val))[0]
    (val / c0 / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "o"
    args = ["occlusion", "--data", str(val), "--out", str(out), "--device", "cpu", "--workers", "0", "--batch-size",
            "4", "--shard-size", "8", "--ratios", "0", "0.5", "--ckpt", f"a={fitted_ckpt}", "--keep-shards"]
    run(args)
    assert "5 shard(s): 5 computed, 0 skipped (finished before), 1 unreadable image(s) skipped" in capsys.readouterr().out
    first = (out / "occlusion.json").read_bytes()
    res = json.loads(first)
    assert [p for p, _ in res["unreadable_images"]] == [str(val / c0 / "zz_broken.png")]
    assert {r["images"] for r in res["rows"]} == {32}
    run(args)
    assert "5 shard(s): 0 computed, 5 skipped (finished before), 1 unreadable" in capsys.readouterr().out
    assert (out / "occlusion.json").read_bytes() == first
    # a shard file from another run is never taken for this one
    store = jobs.ShardStore(str(out / ".shards"), "occlusion", {"other": 1})
    assert len(list((out / ".shards" / "occlusion").glob("occlusion-*.pt"))) == 5  # --keep-shards
    shard = jobs.make_shards(33, 8)[0]
    assert not store.finished(shard, store.key(shard, []))
    with pytest.raises(jobs.JobError, match="multiple of --batch-size 4"):
        jobs.shard_size_for(6, 4)


def test_a_voc_class_map_of_the_wrong_mode_is_counted_and_skipped(synthetic_root, fitted_ckpt, tmp_path, capsys):
    from PIL import Image

    from pretrain.analysis.cli import run

    voc = tmp_path / "voc"
    shutil.copytree(synthetic_root / "voc", voc)
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    bad = voc / "SegmentationClass" / f"{ids[2]}.png"
    Image.open(bad).convert("RGB").save(bad)  # an RGB picture of the classes, not a class map
    out = tmp_path / "o"
    run(["attention", "--voc", str(voc), "--out", str(out), "--device", "cpu", "--workers", "0", "--batch-size", "2",
         "--shard-size", "4", "--ckpt", f"a={fitted_ckpt}"])
    assert "2 shard(s): 2 computed, 0 skipped (finished before), 1 unreadable image(s) skipped" in capsys.readouterr().out
    res = json.loads((out / "attention.json").read_text())
    assert [(p, "mode RGB" in r) for p, r in res["unreadable_images"]] == [(str(bad), True)]
    assert res["rows"][0]["seg_images"] == len(ids) - 1

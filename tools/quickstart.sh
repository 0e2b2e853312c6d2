#!/usr/bin/env bash
# The whole path on the embedded synthetic world, CPU-sized (about 13 minutes per generator seed on 2 cores
# after set-up, measured 2026-12-04; docs/segmentation.md):
#   set-up -> synthetic data -> pretrain (CutMix, TransMix, TokenMix with the CutMix run as its teacher)
#   -> ADE20K-layout Linear-head transfer (random init and each checkpoint) with `mim train mmseg`
#   -> robustness and attention-quality studies of the checkpoints -> a table of val top-1, linear-probe
#   top-1 and mIoU, with the spread across generator seeds.
#
#   bash tools/quickstart.sh                 # generator seed 0: data/synthetic, runs/quickstart/seed0
#   QS_SEEDS="0 1 2" bash tools/quickstart.sh  # three generator seeds (about 3 x as long): the table then
#                                              # gives the mean and the min-max range across them
# Knobs: QS_SEEDS (generator seeds, default 0; seed N > 0 writes data/synthetic-seedN), QS_EPOCHS
#        (pretraining epochs, default 8), QS_SEG_ITERS (segmentation iterations, default 300),
#        QS_OUT (default runs/quickstart).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/setup.sh
PY=.venv/bin/python
export PATH="$ROOT/.venv/bin:$PATH"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${QS_OUT:-runs/quickstart}
SEEDS=${QS_SEEDS:-0}
EPOCHS=${QS_EPOCHS:-8}
SEG_ITERS=${QS_SEG_ITERS:-300}
DATA0=data/synthetic
mkdir -p "$OUT"
T0=$(date +%s)
MIXERS="cutmix transmix tokenmix"
# each background job in its own process group, so that a failure (or Ctrl-C) stops the runs beside it
set -m
stop_jobs() { local j; for j in $(jobs -p); do kill -- "-$j" 2>/dev/null || true; done; }
trap stop_jobs EXIT

# one pretraining run: its log goes to $RUN/pretrain_<mixer>.log; extra arguments are config overrides
# (validated every 4 epochs and after the last: the table reads the last)
pretrain() {
  local mixer=$1; shift
  bash tools/pretrain.sh "configs/pretrain/synthetic_$mixer.yaml" data.root="$DATA/imagenet" \
    train.epochs="$EPOCHS" train.out_dir="$RUN/pretrain_$mixer" train.log_interval=0 train.eval_interval=4 "$@" \
    > "$RUN/pretrain_$mixer.log" 2>&1 || { tail -n 40 "$RUN/pretrain_$mixer.log"; return 1; }
  echo "[quickstart] seed $seed pretrained with $mixer: $(grep -o '"val_top1": [0-9.]*' \
    "$RUN/pretrain_$mixer/summary.json" | tail -n 1)"
}
# one ADE20K-layout Linear-head run from random init or a checkpoint (OMP_NUM_THREADS threads, as pretraining)
segment() {
  local init=$1 ckpt=None
  [ "$init" != random ] && ckpt="$RUN/pretrain_$init/model.safetensors"
  rm -rf "$RUN/seg_$init"
  mim train mmseg configs/mmseg/linear_synthetic.py --work-dir "$RUN/seg_$init" \
    --cfg-options model.backbone.pretrained="$ckpt" train_cfg.max_iters="$SEG_ITERS" \
    train_cfg.val_interval="$SEG_ITERS" param_scheduler.0.end="$SEG_ITERS" \
    train_dataloader.dataset.data_root="$DATA/ade" \
    val_dataloader.dataset.data_root="$DATA/ade" test_dataloader.dataset.data_root="$DATA/ade" \
    > "$RUN/seg_$init.log" 2>&1 || { tail -n 40 "$RUN/seg_$init.log"; return 1; }
  echo "[quickstart] seed $seed segmentation from $init init: $(grep -oE "mIoU: [0-9.]+" "$RUN/seg_$init.log" | tail -n 1)"
}

# Two cores, two single-threaded lanes side by side (every run is seeded and single-threaded, so its
# numbers do not depend on what runs beside it). Lane 1: CutMix, then TokenMix (its teacher is that CutMix
# run), then TokenMix's segmentation run; lane 2: TransMix, the random-init and TransMix segmentation runs,
# then (once CutMix is done) CutMix's segmentation run.
for seed in $SEEDS; do
  DATA=$DATA0
  [ "$seed" != 0 ] && DATA="$DATA0-seed$seed"
  RUN="$OUT/seed$seed"
  mkdir -p "$RUN"
  echo; echo "[quickstart] seed $seed 1/3 synthetic data in $DATA"
  $PY tools/make_synthetic.py --out "$DATA" --seed "$seed"

  echo; echo "[quickstart] seed $seed 2/3 pretraining ($EPOCHS epochs) and the ADE20K-layout Linear head" \
    "from each init ($SEG_ITERS iterations), two runs at a time"
  pretrain cutmix data.workers=1 & a=$!
  { pretrain transmix data.workers=1 && segment random && segment transmix; } & b=$!
  wait $a
  # TokenMix's targets come from a frozen teacher's CLS attention: the CutMix run just trained
  { pretrain tokenmix data.workers=1 "mixer.teacher.checkpoint=$RUN/pretrain_cutmix/model.safetensors" &&
    segment tokenmix; } & c=$!
  wait $b
  segment cutmix
  wait $c

  echo; echo "[quickstart] seed $seed 3/3 occlusion, patch shuffle, class-subset and attention-quality studies"
  ckpts=()
  for mixer in $MIXERS; do ckpts+=("$mixer=$RUN/pretrain_$mixer/model.safetensors"); done
  # the drop ratios the report reads (the full curve: leave --ratios out, about 4 x as long)
  OMP_NUM_THREADS=2 $PY tools/analyze.py all --data "$DATA" --out "$RUN/analysis" --ratios 0 0.5 0.9 --ckpt "${ckpts[@]}" \
    > "$RUN/analysis.log" 2>&1 || { tail -n 40 "$RUN/analysis.log"; exit 1; }
done

echo
OMP_NUM_THREADS=2 $PY tools/quickstart_report.py --out "$OUT" --data "$DATA0" --seeds $SEEDS \
  --elapsed $(( $(date +%s) - T0 ))

#!/usr/bin/env bash
# The whole path on the embedded synthetic world, CPU-sized (about 15 minutes on 2 cores after set-up):
#   set-up -> synthetic data -> pretrain (CutMix, TransMix, TokenMix with the CutMix run as its teacher)
#   -> ADE20K-layout Linear-head transfer (random init and each checkpoint) with `mim train mmseg`
#   -> robustness and attention-quality studies of the checkpoints -> a table of val top-1 and mIoU.
#
#   bash tools/quickstart.sh            # everything under data/synthetic and runs/quickstart
# Knobs: QS_EPOCHS (pretraining epochs, default 8), QS_SEG_ITERS (segmentation iterations, default 300),
#        QS_OUT (default runs/quickstart).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/setup.sh
PY=.venv/bin/python
export PATH="$ROOT/.venv/bin:$PATH"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${QS_OUT:-runs/quickstart}
EPOCHS=${QS_EPOCHS:-8}
SEG_ITERS=${QS_SEG_ITERS:-300}
DATA=data/synthetic
mkdir -p "$OUT"
T0=$(date +%s)

echo; echo "[quickstart] 1/4 synthetic data in $DATA"
$PY tools/make_synthetic.py --out "$DATA"

MIXERS="cutmix transmix tokenmix"
for mixer in $MIXERS; do
  echo; echo "[quickstart] 2/4 pretraining with $mixer ($EPOCHS epochs)"
  extra=()
  # TokenMix's targets come from a frozen teacher's CLS attention: the CutMix run trained just before
  [ "$mixer" = tokenmix ] && extra=("mixer.teacher.checkpoint=$OUT/pretrain_cutmix/model.safetensors")
  bash tools/pretrain.sh "configs/pretrain/synthetic_$mixer.yaml" data.root=$DATA/imagenet \
    train.epochs="$EPOCHS" train.out_dir="$OUT/pretrain_$mixer" train.log_interval=0 "${extra[@]}"
done

for init in random $MIXERS; do
  echo; echo "[quickstart] 3/4 ADE20K-layout Linear head from $init init ($SEG_ITERS iterations)"
  ckpt=None
  [ "$init" != random ] && ckpt="$OUT/pretrain_$init/model.safetensors"
  rm -rf "$OUT/seg_$init"
  # one data worker here, so two intra-op threads use both cores (68 s vs 110 s for 300 iterations)
  OMP_NUM_THREADS=${QS_SEG_THREADS:-2} mim train mmseg configs/mmseg/linear_synthetic.py --work-dir "$OUT/seg_$init" \
    --cfg-options model.backbone.pretrained="$ckpt" train_cfg.max_iters="$SEG_ITERS" \
    train_cfg.val_interval="$SEG_ITERS" param_scheduler.0.end="$SEG_ITERS" \
    train_dataloader.dataset.data_root=$DATA/ade \
    val_dataloader.dataset.data_root=$DATA/ade test_dataloader.dataset.data_root=$DATA/ade \
    > "$OUT/seg_$init.log" 2>&1 || { tail -n 40 "$OUT/seg_$init.log"; exit 1; }
  grep -E "mIoU" "$OUT/seg_$init.log" | tail -n 1 || true
done

echo; echo "[quickstart] 4/4 occlusion, patch shuffle, class-subset and attention-quality studies"
ckpts=()
for mixer in $MIXERS; do ckpts+=("$mixer=$OUT/pretrain_$mixer/model.safetensors"); done
$PY tools/analyze.py all --data "$DATA" --out "$OUT/analysis" --ckpt "${ckpts[@]}" > "$OUT/analysis.log" 2>&1 \
  || { tail -n 40 "$OUT/analysis.log"; exit 1; }

echo
$PY tools/quickstart_report.py --out "$OUT" --data "$DATA" --elapsed $(( $(date +%s) - T0 ))

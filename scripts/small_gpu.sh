#!/usr/bin/env bash
# The `small` profile on one GPU, as one command: Table 2's Conditional DETR rows (scratch, UP-DETR, DETReg,
# Siamese DETR; ImageNet-like -> VOC-like) and Table 3's ablations, 3 seeds each, then the report.
# Usage: scripts/small_gpu.sh [OUT_DIR]   (default: runs_small; MLflow store OUT_DIR/mlflow.db)
set -euo pipefail
out=${1:-runs_small}
profile=${PROFILE:-small}  # PROFILE=smoke checks the script in seconds on a CPU
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$(realpath -m "$out")/mlflow.db}
mkdir -p "$out"
common=(--profile "$profile" --set data.prepared_dir="$out/data" --set backbone.out_dir="$out/backbone"
        --set model.backbone_checkpoint="$out/backbone/backbone.pth" --set proposals.out_dir="$out/proposals"
        --set pretrain.out_dir="$out/pretrain" --set finetune.out_dir="$out/finetune")
siamdetr data prepare "${common[@]}"
siamdetr backbone "${common[@]}"
for method in edgeboxes selective_search random; do
  siamdetr proposals --method "$method" "${common[@]}" --set pretrain.dataset=imagenet
done
for run in in-cond100-updetr in-cond100-detreg in-cond100-siamese \
           in-cond100-siamese-a in-cond100-siamese-b in-cond100-siamese-c in-cond100-siamese-d; do
  siamdetr pretrain --run "$run" "${common[@]}"
done
for run in voc-cond100-e50-scratch voc-cond100-e50-in-updetr voc-cond100-e50-in-detreg voc-cond100-e50-in-siamese \
           voc-cond100-e50-in-siamese-a voc-cond100-e50-in-siamese-b voc-cond100-e50-in-siamese-c \
           voc-cond100-e50-in-siamese-d; do
  siamdetr finetune --run "$run" "${common[@]}"
done
siamdetr report --profile "$profile" --out "$out/reports"

#!/usr/bin/env bash
# 03 · gpv train: pretrain the detector (stage 0), then train GPV on all four tasks starting from it.
#
# Writes two run folders, each with config.yaml, run.json, metrics.jsonl and the checkpoints last/ and best/:
#   $RUNS/detector   the DETR visual encoder alone, trained to find objects (--stage detector)
#   $RUNS/gpv        the whole model, its visual encoder loaded from $RUNS/detector/last
# Takes about 2.5 min (300 detector steps) + 7.5 min (1,000 GPV steps) on 2 CPU cores, like `gpv quickstart`.
# An interrupted run continues with: gpv train --run $RUNS/gpv --resume
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

gpv train --config tiny --stage detector --run "$RUNS/detector" \
  --set train.max_steps="$DETECTOR_STEPS" $SETS

# model.visual.pretrained takes a detector run's last/ (or a transformers DETR folder or hub name).
gpv train --config tiny --run "$RUNS/gpv" --tasks vqa,cap,loc,cls \
  --set model.visual.pretrained="$RUNS/detector/last" \
  --set train.max_steps="$STEPS" $SETS

#!/usr/bin/env bash
# 03 · gpv train: warm up the CNN backbone on object crops, pretrain the detector (stage 0) from it, then
# train GPV on all four tasks starting from the detector.
#
# Writes three run folders, each with config.yaml, run.json, metrics.jsonl and the checkpoints last/ and best/:
#   $RUNS/classifier the CNN backbone alone, trained to name the train crops (--stage classifier)
#   $RUNS/detector   the DETR visual encoder, trained to find objects (--stage detector), from $RUNS/classifier/last
#   $RUNS/gpv        the whole model, its visual encoder loaded from $RUNS/detector/last
# Takes about the time of `gpv quickstart`'s training (see README.md) on 2 CPU cores.
# An interrupted run continues with: gpv train --run $RUNS/gpv --resume
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

gpv train --config tiny --stage classifier --run "$RUNS/classifier" \
  --set train.batch_size=64 --set train.max_steps="$CLASSIFIER_STEPS" $SETS

gpv train --config tiny --stage detector --run "$RUNS/detector" \
  --set model.visual.pretrained="$RUNS/classifier/last" \
  --set train.max_steps="$DETECTOR_STEPS" $SETS

# model.visual.pretrained takes a detector run's last/ (or a transformers DETR folder or hub name).
gpv train --config tiny --run "$RUNS/gpv" --tasks vqa,cap,loc,cls \
  --set model.visual.pretrained="$RUNS/detector/last" \
  --set train.max_steps="$STEPS" $SETS

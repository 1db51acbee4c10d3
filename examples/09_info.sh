#!/usr/bin/env bash
# 09 · gpv info: parameters per component (trainable / frozen), FLOPs and activations of one forward
# pass of a preset, beside the paper's GPV-1 figures. No data or training needed.
#
# Prints the tables of the tiny and gpv1 presets and writes $RUNS/info/gpv1_task_heads.json.
# About 13 s a preset (the gpv1 model is measured without allocating its 232M parameters). The gpv1
# preset names pretrained checkpoints: info says whether they are in the local cache, never downloads them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

for config in $INFO_CONFIGS; do
  gpv info --config "$config"
done

# --set changes any field before measuring (here one answer head per task instead of one per modality:
# the paper's 311M parameters); --json prints the figures for scripts.
mkdir -p "$RUNS/info"
gpv info --config gpv1 --set model.heads=task --json > "$RUNS/info/gpv1_task_heads.json"

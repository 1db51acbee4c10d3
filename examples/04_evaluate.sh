#!/usr/bin/env bash
# 04 · gpv evaluate: score the trained run on the COCO-SCE test split, per task and for seen / unseen
# categories (a row of the paper's Table 1) and per category group (the data of its Fig. 1).
#
# Writes $RUNS/gpv/eval/test/: metrics.json, predictions.jsonl (every answer), vqa_results.json,
# captions_results.json, detections.json (official result formats) and boxes.npz.
# Takes about 70 s for the 13,420 test samples of the full world on 2 CPU cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

# --limit N is a quick look at the first N samples of the split; they are grouped by task (VQA first),
# so a small N scores only the first tasks. Add --tasks loc,cls to pick tasks.
limit=""
if [[ "$EVAL_LIMIT" != 0 ]]; then limit="--limit $EVAL_LIMIT"; fi
gpv evaluate "$RUNS/gpv" --split test $limit

# The numbers are saved in $RUNS/gpv/eval/test/metrics.json; add --json to print them instead of tables.

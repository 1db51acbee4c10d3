#!/usr/bin/env bash
# 02 · gpv prepare: turn the COCO-format files into training samples of every task (vqa, cap, loc,
# cls, refexp) with the COCO-SCE split (categories held out of some tasks, test tagged seen/unseen).
#
# Reads $GPV_HOME/synth (from 01; generated here if missing) and writes $GPV_HOME/prepared/sce/:
# train.h5, val.h5, test.h5, vocab.json (answer words), query_vocab.txt, stats.json (Table 5), meta.json.
# Takes a few seconds at full size. For real COCO add --coco-dir DIR (layout in the README).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

gpv prepare --split sce

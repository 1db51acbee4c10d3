#!/usr/bin/env bash
# 10 · gpv quickstart: 01-04 in one command (synthetic world, COCO-SCE, backbone warm-up, region-word
# alignment, GPV, test evaluation with the grounding checks) plus a few answers on one test image. It reuses the world and prepared data in
# $GPV_HOME when they exist, and resumes if interrupted.
#
# Writes $RUNS/quickstart/: classifier/, align/ and gpv/ (run folders), gpv/eval/test/ (metrics) and
# example.jpg (a localization drawn with relevance). Its time on 2 CPU cores at --budget 1 (200 warm-up,
# 600 alignment and 2,400 GPV steps) is in README.md; --budget scales the steps (0.2 for a quick look).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

gpv quickstart --runs "$RUNS/quickstart" --budget "$QUICKSTART_BUDGET"

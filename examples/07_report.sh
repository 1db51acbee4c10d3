#!/usr/bin/env bash
# 07 · gpv report: one self-contained HTML page (images embedded) that opens with the run's training curves
# (loss terms, learning rates, validation metrics), then the model's answers and boxes beside the ground
# truth, for every sample of N randomly drawn (seeded) test images.
#
# Writes $RUNS/report.html (and the curves as $RUNS/gpv/curves.png); open it in a browser. Takes about 20 s for 10 images on 2 CPU cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

gpv report "$RUNS/gpv" --n "$REPORT_N" --out "$RUNS/report.html"

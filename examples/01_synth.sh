#!/usr/bin/env bash
# 01 · gpv synth: generate the synthetic world, written in the real COCO 2014 / VQA v2 file formats.
#
# Writes $GPV_HOME/synth/: images/{train2014,val2014}/*.jpg, annotations/*.json (instances, captions,
# VQA questions and answers, referring expressions) and baselines.json (the image-blind answer prior
# and a perfect class-blind localizer: the scores a model must beat).
# Takes about 25 s at full size (2,000 + 500 images of 128x96) on 2 CPU cores.
# Run from the repo root: bash examples/01_synth.sh   (SMALL=1 for a 40 + 4 image world)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

# The same arguments always give the same files; --seed picks another world.
gpv synth "$GPV_HOME/synth" --train-images "$TRAIN_IMAGES" --val-images "$VAL_IMAGES" --seed 0

#!/usr/bin/env bash
# 05 · gpv predict: answer a task in plain words on your own pictures, with text and relevance-scored
# boxes (pixel xyxy). The task is inferred from the words: "Locate dog." (localization), "What is this?"
# (classification), "Describe the image." (captioning), anything else is a VQA question.
#
# Writes under $RUNS/predict/:
#   dog.jpg              one image, the top boxes and the answer drawn on it (--out)
#   one.json             the same prediction as JSON (--json: task, text, boxes, scores)
#   photos/              a folder of four test images (copied from the synthetic world) ...
#   drawn/               ... every one of them annotated (batch mode: --out is a folder)
#   folder.jsonl         ... and their predictions, one JSON line each
#   pairs.jsonl          a JSONL of {"image", "text"} lines: a different task per image ...
#   pairs_out.jsonl      ... and its predictions
# Takes a few seconds (mostly loading the model).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

out="$RUNS/predict"
rm -rf "$out/photos" && mkdir -p "$out/photos"
# Four test images stand in for your own photos.
images=("$GPV_HOME"/synth/images/val2014/*.jpg)
cp "${images[@]:0:4}" "$out/photos/"
names=($(cd "$out/photos" && ls))

# One image: print the answer and boxes as JSON (saved to one.json) and draw them to dog.jpg.
gpv predict "$out/photos/${names[0]}" "Locate dog." --run "$RUNS/gpv" --top-k 3 --out "$out/dog.jpg" --json \
  | tee "$out/one.json"

# Batch mode over a folder: the same task on every image.
gpv predict "$out/photos" "What is this?" --run "$RUNS/gpv" --out "$out/drawn" --json > "$out/folder.jsonl"

# Batch mode over a JSONL: one (image, text) pair a line; image paths are relative to the JSONL file.
cat > "$out/pairs.jsonl" <<JSONL
{"image": "photos/${names[0]}", "text": "Describe the image."}
{"image": "photos/${names[1]}", "text": "What color is the largest object?"}
{"image": "photos/${names[2]}", "text": "Locate person."}
{"image": "photos/${names[3]}", "text": "What is this?"}
JSONL
gpv predict "$out/pairs.jsonl" --run "$RUNS/gpv" --json > "$out/pairs_out.jsonl"
cat "$out/pairs_out.jsonl"

"""06 · The Python API: load a trained run and ask it things, from your own code.

    python examples/06_api.py          (from the repo root, after 03_train.sh)

Loads $GPV_EXAMPLE_RUNS/gpv (default runs/examples/gpv; its best/ checkpoint), answers three tasks on a
test image of the synthetic world (one from a path, one from a PIL image, a batch of two) and prints the
text and boxes. Writes nothing. Takes a few seconds (mostly loading the model).
"""

import os
from pathlib import Path

from PIL import Image

from gpvcli import api
from gpvcli.paths import default_synth_dir

run = Path(os.environ.get("GPV_EXAMPLE_RUNS", "runs/examples")) / "gpv"
image_path = min((default_synth_dir() / "images" / "val2014").glob("*.jpg"))   # any photo of yours

# The three lines: load a run (or a checkpoint folder), predict, read the answer.
model = api.load(run)
out = model.predict(image_path, "Locate dog.")
print(f"{out.task}: {out.text!r}; top box {[round(v, 1) for v in out.boxes[0]]} (pixel x0, y0, x1, y1), "
      f"relevance {out.scores[0]:.3f}")

# A PIL image works as well; pass task="vqa", "cap", "loc", "cls" or "refexp" to name the task yourself.
image = Image.open(image_path)
out = model.predict(image, "What is this?", top_k=1)
print(f"{out.task}: {out.text!r}")

# Several (image, text) pairs in one forward pass; to_dict() is what `gpv predict --json` prints.
for pred in model.predict_batch([image, image], ["Describe the image.", "How many objects are there?"]):
    print(pred.to_dict())

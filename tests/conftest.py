import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one worker per core (pyproject's -n 2): torch's own threads in each would oversubscribe the cores,
    # and the tests' models are too small to gain from them; the commands the tests start inherit this
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_mini_coco(root: Path) -> Path:
    """A hand-written COCO/VQA folder: few images, known contents, no image files.

    train2014: images 1-10; val2014: images 101-104. Categories used: dog (18), hot dog (58),
    bench (15, H_vqa,cap), banana (52, H_cls,loc), person (1).
    """
    from gpvcli.data.categories import coco_category_dicts

    def split(name, image_ids, captions, instances, questions):
        images = [{"id": i, "file_name": f"COCO_{name}_{i:012d}.jpg", "width": 100, "height": 80}
                  for i in image_ids]
        anns = [{"id": aid, "image_id": im, "category_id": c, "bbox": list(b), "area": b[2] * b[3], "iscrowd": 0}
                for aid, im, c, b in instances]
        _write(root / "annotations" / f"instances_{name}.json",
               {"images": images, "annotations": anns, "categories": coco_category_dicts()})
        _write(root / "annotations" / f"captions_{name}.json",
               {"images": images, "annotations": [{"id": cid, "image_id": im, "caption": c}
                                                  for cid, im, c in captions]})
        _write(root / "annotations" / f"v2_OpenEnded_mscoco_{name}_questions.json",
               {"questions": [{"question_id": q, "image_id": im, "question": text} for q, im, text, _ in questions]})
        _write(root / "annotations" / f"v2_mscoco_{name}_annotations.json",
               {"annotations": [{"question_id": q, "image_id": im, "multiple_choice_answer": ans,
                                 "answers": [{"answer": ans, "answer_confidence": "yes", "answer_id": k + 1}
                                             for k in range(10)],
                                 "question_type": "what is", "answer_type": "other"}
                                for q, im, _, ans in questions]})
        (root / "images" / name).mkdir(parents=True, exist_ok=True)

    train_ids = list(range(1, 11))
    split("train2014", train_ids,
          captions=[(1000 + i, i, c) for i, c in zip(train_ids, [
              "A dog sits on a bench.", "A hot dog on a plate.", "Two dogs play.", "A banana on a table.",
              "A man with a dog.", "Benches in a park.", "A puppy.", "A man eating a hot dog.",
              "A person.", "Some bananas."])],
          instances=[(i * 10 + k, i, c, (5.0 * k, 5.0, 20.0, 10.0))
                     for i in train_ids for k, c in enumerate([18, 52] if i % 2 else [18, 15, 1])],
          questions=[(2000 + i, i, q, a) for i, q, a in [
              (1, "What is on the bench?", "dog"), (2, "What animal is this?", "dog"),
              (3, "Is there a horse?", "no"), (4, "What fruit is this?", "banana")]])
    split("val2014", [101, 102, 103, 104],
          captions=[(3001, 101, "A dog on a bench."), (3002, 102, "A dog and a banana."),
                    (3003, 103, "A hot dog."), (3004, 104, "A person.")],
          instances=[(5001, 101, 18, (1.0, 1.0, 10.0, 10.0)), (5002, 101, 15, (20.0, 20.0, 30.0, 20.0)),
                     (5003, 102, 52, (2.0, 2.0, 10.0, 10.0)), (5004, 102, 52, (40.0, 2.0, 10.0, 10.0)),
                     (5005, 103, 58, (0.0, 0.0, 50.0, 40.0)), (5006, 104, 1, (90.0, 70.0, 20.0, 20.0))],
          questions=[(4001, 101, "What is the dog on?", "bench"), (4002, 102, "What is yellow?", "banana"),
                     (4003, 103, "What food is this?", "hot dog")])
    return root


@pytest.fixture
def mini_coco(tmp_path) -> Path:
    return make_mini_coco(tmp_path / "coco")


# Training settings that keep a test run to seconds on 2 CPU cores.
FAST_TRAIN = ["train.batch_size=8", "train.val_samples=16", "train.val_batch_size=16", "train.precision=fp32",
              "train.frozen_visual_epochs=0", "train.threads=1", "train.log_every=1", "train.epochs=1"]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> dict:
    """A small synthetic world and its COCO-SCE preparation, shared by the tests of a session."""
    from gpvcli.data.prepare import prepare
    from gpvcli.synth.world import generate

    root = tmp_path_factory.mktemp("world")
    generate(root / "coco", train_images=40, val_images=16, seed=0)
    stats = prepare("sce", coco_dir=root / "coco", out_dir=root / "sce", seed=0)
    return {"coco": root / "coco", "data": root / "sce", "stats": stats}


@pytest.fixture(scope="session")
def tiny_run(tiny_world, tmp_path_factory) -> Path:
    """A run trained for two steps on `tiny_world` (enough to exercise everything downstream of train)."""
    from gpvcli.train.trainer import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(run, data_dir=tiny_world["data"], overrides=FAST_TRAIN + ["train.max_steps=2"], show_progress=False)
    return run


HOLD = "import sys, time\nfrom pathlib import Path\nfrom gpvcli import locks\n" \
       "with locks.writing(Path(sys.argv[1]), option='--run'):\n    print('held', flush=True)\n    time.sleep(600)"


def hold_lock(folder: Path) -> subprocess.Popen:
    """A process that holds the lock of `folder` (as a training would) until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "held"
    return proc

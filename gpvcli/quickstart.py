"""`gpv quickstart`: the whole pipeline on the embedded synthetic world, on a laptop CPU.

1. generate the synthetic world ($GPV_HOME/synth) and prepare COCO-SCE ($GPV_HOME/prepared/sce), unless present;
2. warm up the CNN backbone on the train object crops (stage "classifier") -> runs/quickstart/classifier;
3. from it, align regions and words: detection posed as grounding of category phrases (stage "align")
   -> runs/quickstart/align;
4. train tiny GPV on all four tasks from the aligned encoders, the visual encoder frozen and its features
   cached -> runs/quickstart/gpv;
5. evaluate on test (seen / unseen, with the grounding checks) and answer a few tasks on one test image,
   drawn to a picture.
Every step resumes: rerunning after an interruption continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from gpvcli import runs as run_folder
from gpvcli.config import DEFAULT_PRESET
from gpvcli.errors import Interrupted

# Steps of each stage at budget 1, sized so that the whole quickstart runs in about 20 minutes on 2 CPU cores
# (times and figures in the README).
CLASSIFIER_STEPS = 200    # batches of 64 crops
ALIGN_STEPS = 600         # batches of 32 images
GPV_STEPS = 2400          # batches of 32 samples, from cached visual features
# The tiny recipe's model, in every stage: regions read through their own crops and scored against the
# query (see VisualConfig.region_crops and ModelConfig.phrase_grounding).
RECIPE = ["model.phrase_grounding=true", "model.visual.region_crops=[32,48]"]
# GPV keeps the visual encoder the align stage trained (frozen for every epoch, so its features are cached).
FROZEN_VISUAL = "train.frozen_visual_epochs=1000"


def _finished(run: Path) -> bool:
    from gpvcli.train.config import load_run_config

    steps = run_folder.steps_done(run)
    return steps is not None and steps >= load_run_config(run / run_folder.CONFIG).train.max_steps


def _train(run: Path, data: Path, overrides: list[str], show_progress: bool, rerun: str) -> None:
    from gpvcli.train.trainer import train

    if _finished(run):             # (which also restores a last/ interrupted mid-save)
        return
    resume = (run / run_folder.LAST).is_dir()
    try:
        train(run, config=DEFAULT_PRESET, data_dir=data, overrides=[] if resume else overrides, resume=resume,
              show_progress=show_progress)
    except Interrupted as e:
        e.hint = f"rerun the same `{rerun}` to continue"
        raise


def steps(base: int, budget: float) -> int:
    return max(1, round(base * budget))


def pretrain_encoders(runs: Path, data: Path, *, budget: float = 1.0, sets: list[str] | tuple[str, ...] = (),
                      show_progress: bool = True, rerun: str = "gpv quickstart") -> Path:
    """The stages before GPV (backbone warm-up, then alignment) into RUNS/classifier and RUNS/align, each
    resumed or skipped when finished; `sets` (model.* overrides) follow the recipe. Returns the align
    stage's last/ (what GPV starts from, see `gpv_overrides`)."""
    classifier, align = runs / "classifier", runs / "align"
    _train(classifier, data, [*RECIPE, *sets, "train.stage=classifier", "train.batch_size=64",
                              f"train.max_steps={steps(CLASSIFIER_STEPS, budget)}"], show_progress, rerun)
    _train(align, data, [*RECIPE, *sets, "train.stage=align",
                         f"model.visual.pretrained={(classifier / run_folder.LAST).resolve()}",
                         f"train.max_steps={steps(ALIGN_STEPS, budget)}"], show_progress, rerun)
    return (align / run_folder.LAST).resolve()


def gpv_overrides(start: Path) -> list[str]:
    """The recipe of the GPV stage started from the checkpoint folder `start` (step count aside)."""
    return [*RECIPE, FROZEN_VISUAL, f"train.init_from={Path(start).resolve()}"]


def quickstart(*, runs: Path = Path("runs/quickstart"), budget: float = 1.0, show_progress: bool = True) -> dict:
    """Run the pipeline; returns {"data", "classifier", "align", "gpv", "metrics", "examples", "picture"}."""
    from gpvcli.default_data import prepared_data
    from gpvcli.eval.evaluate import evaluate

    data = prepared_data(show_progress=show_progress)
    start = pretrain_encoders(runs, data, budget=budget, show_progress=show_progress)
    gpv = runs / "gpv"
    _train(gpv, data, [*gpv_overrides(start), f"train.max_steps={steps(GPV_STEPS, budget)}"], show_progress,
           "gpv quickstart")
    result = evaluate(gpv, split="test", show_progress=show_progress)
    examples, picture = examples_on_one_image(gpv, data, runs / "example.jpg")
    return {"data": str(data), "classifier": str(runs / "classifier"), "align": str(runs / "align"), "gpv": str(gpv),
            "metrics": result, "examples": examples, "picture": str(picture)}


def examples_on_one_image(run: Path, data: Path, picture: Path) -> tuple[list[dict], Path]:
    """The model's answers to a caption, a question and a localization on the first test image."""
    from gpvcli import api
    from gpvcli.data.images import load_image
    from gpvcli.data.store import SplitStore
    from gpvcli.viz.draw import save_drawing

    store = SplitStore(data / "test.h5")
    tasks = store.tasks
    first_loc = tasks.index("loc")
    row = int(store.image[first_loc])
    queries = [store.query[first_loc], "Describe the image."]
    queries += [store.query[i] for i in range(len(store)) if tasks[i] == "vqa" and int(store.image[i]) == row][:1]
    image = load_image(Path(store.images_root) / store.image_file[row])
    model = api.load(run)
    preds = model.predict_batch([image] * len(queries), queries, top_k=3)
    save_drawing(image, preds[0].boxes, preds[0].scores, preds[0].caption(queries[0]), picture)
    return [{"query": q, **p.to_dict()} for q, p in zip(queries, preds)], picture

"""gpv evaluate, gpv predict and the Python API, on a briefly trained tiny run."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gpvcli import api
from gpvcli.cli.app import app
from gpvcli.data.store import SplitStore
from gpvcli.errors import GPVError
from gpvcli.eval.evaluate import evaluate, table1_row
from gpvcli.runs import resolve_checkpoint

runner = CliRunner()


def test_resolve_checkpoint(tiny_run, tmp_path):
    assert resolve_checkpoint(tiny_run) == tiny_run / "best"
    assert resolve_checkpoint(tiny_run / "last") == tiny_run / "last"
    with pytest.raises(GPVError, match="no run or checkpoint"):
        resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(GPVError, match="holds no GPV checkpoint"):
        resolve_checkpoint(tmp_path)


def test_evaluate_writes_metrics_and_predictions(tiny_run, tiny_world, tmp_path):
    out = tmp_path / "eval"
    result = evaluate(tiny_run, split="test", out_dir=out, show_progress=False)
    store = SplitStore(tiny_world["data"] / "test.h5")
    assert result["protocol"]["samples"] == len(store)
    assert result["protocol"]["data_dir"] == str(tiny_world["data"].resolve())    # read from the run
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == len(store)
    counts = {t: store.tasks.count(t) for t in set(store.tasks)}
    for task, row in result["tasks"].items():
        assert row["n"] == counts[task]
        assert row["n_unseen"] == sum(1 for x in lines if x["task"] == task and x["unseen"])
        if row["seen"] is not None and row["unseen"] is not None:   # all = sample-weighted mix of seen and unseen
            mix = (row["seen"] * (row["n"] - row["n_unseen"]) + row["unseen"] * row["n_unseen"]) / row["n"]
            assert row["all"] == pytest.approx(mix)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["tasks"] == result["tasks"] and len(saved["protocol"]["checkpoint_sha256"]) == 64
    detections = json.loads((out / "detections.json").read_text())
    assert detections and all(len(d["bbox"]) == 4 and d["category_id"] > 0 for d in detections)
    vqa = json.loads((out / "vqa_results.json").read_text())
    assert len(vqa) == counts["vqa"] and all("question_id" in v for v in vqa)
    boxes = np.load(out / "boxes.npz")
    assert boxes["boxes"].shape[:2] == boxes["relevance"].shape and len(boxes["index"]) == len(store)
    assert np.all(np.diff(boxes["relevance"], axis=1) <= 0)          # sorted by relevance
    header, cells = table1_row(result["tasks"])
    assert len(header) == len(cells) == 12 and header[0] == "VQA Test"


def test_evaluate_cli(tiny_run, tmp_path):
    result = runner.invoke(app, ["evaluate", str(tiny_run), "--split", "val", "--out", str(tmp_path / "e"),
                                 "--limit", "20", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()          # off a terminal (CliRunner): plain progress lines, whole tables
    counts = [int(line.split()[2].split("/")[0]) for line in lines if line.startswith("evaluating val ")]
    assert counts[-1] == 20 and any(0 < c < 20 for c in counts), lines
    tables = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert max(map(len, lines)) == max(map(len, tables)) > 80
    assert "VQA Test" in result.output or "VQA" in result.output
    assert (tmp_path / "e" / "metrics.json").is_file()


@pytest.mark.parametrize("task_text, task", [("Describe the image.", "cap"), ("What is this?", "cls"),
                                             ("Locate dog.", "loc"), ("find all instances of cat", "loc"),
                                             ("What color is the bus?", "vqa")])
def test_infer_task(task_text, task):
    assert api.infer_task(task_text) == task


def _odd_images(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    paths = {}
    paths["rgba.png"] = rgb.convert("RGBA")
    paths["gray.png"] = rgb.convert("L")
    paths["palette.png"] = rgb.convert("P")
    exif = Image.Exif()
    exif[0x0112] = 6                                   # rotated: width and height swap on load
    paths["exif.jpg"] = rgb
    for name, img in paths.items():
        img.save(tmp_path / name, exif=exif) if name == "exif.jpg" else img.save(tmp_path / name)
    return tmp_path


def test_api_on_odd_images(tiny_run, tmp_path):
    model = api.load(tiny_run)
    folder = _odd_images(tmp_path)
    for name in ("rgba.png", "gray.png", "palette.png", "exif.jpg"):
        out = model.predict(folder / name, "Locate dog.", top_k=3)
        assert out.task == "loc" and len(out.boxes) == len(out.scores) == 3
        assert out.scores == sorted(out.scores, reverse=True)
        width, height = (60, 80) if name == "exif.jpg" else (80, 60)
        assert all(0 <= b[0] <= b[2] <= width and 0 <= b[1] <= b[3] <= height for b in out.boxes)
    with pytest.raises(GPVError, match="empty"):
        model.predict(folder / "gray.png", "   ")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(GPVError, match="cannot read image"):
        model.predict(tmp_path / "broken.jpg", "What is this?")


def test_predict_cli(tiny_run, tmp_path):
    folder = _odd_images(tmp_path / "imgs")
    result = runner.invoke(app, ["predict", str(folder / "rgba.png"), "Locate dog.", "--run", str(tiny_run),
                                 "--json", "--top-k", "4", "--out", str(tmp_path / "drawn.png")])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["task"] == "loc" and len(record["boxes"]) == 4
    assert Image.open(tmp_path / "drawn.png").size[1] > 60
    batch = runner.invoke(app, ["predict", str(folder), "What is this?", "--run", str(tiny_run), "--json",
                                "--out", str(tmp_path / "drawn")])
    assert batch.exit_code == 0, batch.output
    assert len([x for x in batch.output.splitlines() if x.startswith("{")]) == 4
    assert len(list((tmp_path / "drawn").glob("*.annotated.jpg"))) == 4
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"image": "imgs/gray.png", "text": "Describe the image."}\n'
                     '{"image": "imgs/exif.jpg", "text": "What color is the dog?"}\n')
    jl = runner.invoke(app, ["predict", str(pairs), "--checkpoint", str(tiny_run / "last"), "--json"])
    assert jl.exit_code == 0, jl.output
    tasks = [json.loads(x)["task"] for x in jl.output.splitlines() if x.startswith("{")]
    assert tasks == ["cap", "vqa"]


def test_a_box_task_prints_boxes_only_and_a_text_task_its_answer(tiny_run, tmp_path):
    folder = _odd_images(tmp_path / "imgs")
    args = ["predict", str(folder / "rgba.png"), "Locate dog.", "--run", str(tiny_run), "--top-k", "3"]
    full = json.loads(runner.invoke(app, [*args, "--json"]).output.strip().splitlines()[-1])
    assert set(full) == {"image", "query", "task", "text", "boxes", "scores"}       # --json keeps every field
    printed = runner.invoke(app, args)
    assert printed.exit_code == 0, printed.output
    lines = printed.output.strip().splitlines()
    assert lines[0] == "rgba.png 'Locate dog.' (loc)"                                # no text answer
    assert lines[1:] == [f"  {s:.3f}  [{', '.join(f'{v:.1f}' for v in b)}]" for b, s in zip(full["boxes"],
                                                                                        full["scores"])]
    pred = api.Prediction(text=full["text"], task="loc", boxes=full["boxes"], scores=full["scores"])
    assert pred.caption("Locate dog.") == "Locate dog."                              # the drawing's caption
    question = "What color is the dog?"
    vqa = runner.invoke(app, ["predict", str(folder / "rgba.png"), question, "--run", str(tiny_run), "--top-k", "0"])
    answer = api.load(tiny_run).predict(folder / "rgba.png", question, top_k=0)
    assert answer.task == "vqa"
    assert vqa.output.strip().splitlines() == [f"rgba.png '{question}' (vqa) -> {answer.text or '(empty)'}"]


def test_decoding_from_a_feature_cache_equals_decoding_the_cached_values_live(tiny_run, tiny_world, tmp_path):
    """The ablation scores its variants from one shared cache of the test split's visual features. Oracle: the
    same checkpoint decoding live, its encoder's outputs rounded as the cache stores them; the swapped
    samples (another sample's image or crop) read the other sample's entry."""
    import torch

    from gpvcli.data.dataset import feature_key, input_pixels
    from gpvcli.eval import grounding
    from gpvcli.eval.evaluate import Decoder
    from gpvcli.model.feature_cache import build_feature_cache, decode_rows, encode_rows, visual_fingerprint

    store = SplitStore(tiny_world["data"] / "test.h5")
    checkpoint = resolve_checkpoint(tiny_run)
    live = Decoder(checkpoint)
    encoder, size = live.model.visual, tuple(live.cfg.visual.image_size)
    keys = {feature_key(store, i): i for i in range(len(store))}
    path = build_feature_cache(encoder, ((k, input_pixels(store, i, size)) for k, i in keys.items()), tmp_path / "t.h5",
                               batch_size=5, fingerprint=visual_fingerprint(encoder, live.cfg.visual))
    forward = encoder.forward
    encoder.forward = lambda images: decode_rows({k: torch.from_numpy(v) for k, v in
                                                  encode_rows(forward(images), "float16").items()})
    cached = Decoder(checkpoint, features=path)
    cached.model.visual.forward = lambda images: pytest.fail("the cached decoder ran its visual encoder")
    swap = grounding.pairings(store, np.arange(len(store)))["cls"]
    for args in ((np.arange(len(store)),), (swap.targets,)):
        extra = {} if len(args[0]) == len(store) else {"image_of": swap.image_of, "query_of": swap.query_of}
        want, got = live(store, *args, batch_size=4, **extra), cached(store, *args, batch_size=4, **extra)
        assert [p["index"] for p in got] == [p["index"] for p in want]
        assert [p["text"] for p in got] == [p["text"] for p in want]
        for a, b in zip(got, want):
            torch.testing.assert_close(torch.from_numpy(a["boxes"]), torch.from_numpy(b["boxes"]), atol=1e-4, rtol=0)
    result = evaluate(tiny_run, split="test", out_dir=tmp_path / "e", features=path, show_progress=False)
    assert result["protocol"]["visual_features"] == f"read from the feature cache {path}"
    other = tmp_path / "other.h5"
    build_feature_cache(encoder, [("img:0", input_pixels(store, 0, size))], other, fingerprint="another encoder")
    with pytest.raises(GPVError, match="computed with a different visual encoder"):
        Decoder(checkpoint, features=other)

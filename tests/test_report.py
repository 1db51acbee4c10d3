import base64
import importlib.util
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from conftest import FAST_TRAIN
from PIL import Image
from typer.testing import CliRunner

from gpvcli.cli.report import report_command
from gpvcli.data.store import SplitStore
from gpvcli.errors import GPVError
from gpvcli.viz import report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tiny_world, tmp_path_factory) -> dict:
    """A 2-step run and its report (2 images, seed 1), written through the CLI command."""
    from gpvcli.train.trainer import train

    run = tmp_path_factory.mktemp("report") / "run"
    train(run, data_dir=tiny_world["data"], overrides=FAST_TRAIN + ["train.max_steps=2"], show_progress=False)
    app = typer.Typer()
    app.command()(report_command)
    result = CliRunner().invoke(app, [str(run), "--n", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    return {"run": run, "page": (run / "report.html").read_text(encoding="utf-8"),
            "store": SplitStore(tiny_world["data"] / "test.h5")}


def test_report_is_one_self_contained_file(built):
    page = built["page"]
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources[0] == "data:image/png;base64," + base64.b64encode((built["run"] / "curves.png").read_bytes()
                                                                     ).decode("ascii")        # the curves first
    assert len(sources) > 1 and all(s.startswith("data:image/jpeg;base64,") for s in sources[1:])
    picture = Image.open(io.BytesIO(base64.b64decode(sources[1].split(",", 1)[1])))
    assert picture.format == "JPEG" and max(picture.size) >= report.PICTURE_SIDE
    assert not list(built["run"].glob(".report.html.*"))   # no temporary file left behind


def test_report_has_the_drawn_images_and_one_card_per_sample(built):
    page, store = built["page"], built["store"]
    rows = report.pick_images(store, 2, seed=1)
    sections = re.findall(r'<section class="image" id="image-(\d+)">(.*?)</section>', page, re.DOTALL)
    assert [int(image_id) for image_id, _ in sections] == [int(store.image_id[r]) for r in rows]
    for (_, body), row in zip(sections, rows):
        expected = np.flatnonzero(store.image == row)
        assert body.count('<article class="card"') == len(expected)
        assert sorted(re.findall(r'data-task="(\w+)"', body)) == sorted(store.tasks[i] for i in expected)
    assert 'class="tag seen"' in page or 'class="tag unseen"' in page
    assert page.count("(dashed)") == sum(store.tasks[i] in ("loc", "refexp")
                                         for i in np.flatnonzero(np.isin(store.image, rows)))


def test_the_report_opens_with_the_runs_curves(built):
    from gpvcli.viz.curves import read_metrics, scalars

    page = built["page"]
    assert page.index('class="curves"') < page.index('<section class="image"')
    with Image.open(built["run"] / "curves.png") as im:
        assert im.format == "PNG"
        colours = im.convert("RGB").getcolors(maxcolors=1 << 24)
    assert len(colours) > 100                                   # lines, labels and legends, not a blank image
    steps, validations = read_metrics(built["run"] / "metrics.jsonl")
    assert [r["step"] for r in steps] == [1, 2] and validations   # what the panels draw
    names = set(scalars(steps[0]))
    assert {"loss/loss", "lr/rest"} <= names and not any(n.endswith("_scaled") for n in names)
    assert set(scalars(validations[-1])) == {f"val/{t}" for t, row in validations[-1]["validation"]["tasks"].items()
                                             if row["all"] is not None} | {"val/selection"}
    events = list((built["run"] / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == (importlib.util.find_spec("tensorboard") is not None)   # only where it is installed


def test_tensorboard_events_hold_the_logged_scalars(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gpvcli.viz.curves import tensorboard_log

    log = tensorboard_log(tmp_path, 0)
    for step in (1, 2):
        log.add({"step": step, "loss": 1.0 / step, "loss_vqa": 2.0, "loss_vqa_scaled": 2.0, "lr": {"rest": 0.1}})
    log.add({"step": 2, "validation": {"tasks": {"vqa": {"all": 0.5}}, "selection": 0.5}})
    assert capsys.readouterr().out.count("TensorBoard event files in") == 1
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["loss/loss", "loss/loss_vqa", "lr/rest", "val/selection", "val/vqa"]
    assert [(e.step, e.value) for e in events.Scalars("loss/loss")] == [(1, 1.0), (2, 0.5)]


def test_without_tensorboard_nothing_is_written_or_said(tmp_path, capsys, monkeypatch):
    import sys

    from gpvcli.viz.curves import tensorboard_log

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)        # import fails, as when absent
    log = tensorboard_log(tmp_path, 0)
    log.add({"step": 1, "loss": 1.0})
    assert not log.available and capsys.readouterr().out == "" and not (tmp_path / "tensorboard").exists()


def test_curves_skip_a_line_cut_short_and_need_a_step(tmp_path):
    from gpvcli.viz.curves import draw_curves, read_metrics

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 2.0, "lr": {"rest": 0.1}}\n{"step": 2, "lo')
    assert read_metrics(metrics) == ([{"step": 1, "loss": 2.0, "lr": {"rest": 0.1}}], [])
    assert draw_curves(metrics, tmp_path / "c.png") == tmp_path / "c.png"
    metrics.write_text("")
    assert draw_curves(metrics, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_image_draw_is_seeded():
    class Store:
        image = np.repeat(np.arange(16), 3)

    assert report.pick_images(Store(), 4, seed=7) == report.pick_images(Store(), 4, seed=7)
    assert report.pick_images(Store(), 4, seed=7) != report.pick_images(Store(), 4, seed=8)
    assert report.pick_images(Store(), 100, seed=0) == list(range(16))


def test_text_is_escaped(tiny_world):
    store = SplitStore(tiny_world["data"] / "test.h5")
    i = int(np.flatnonzero(np.asarray(store.tasks) == "vqa")[0])
    evil = '<script>alert("x")</script> & <img src=x>'
    store.query = [evil if k == i else q for k, q in enumerate(store.query.tolist())]
    q = 4
    record = {"index": i, "task": "vqa", "text": "<b>bold</b>", "boxes": np.full((q, 4), 0.5, np.float32),
              "relevance": np.linspace(0.9, 0.1, q, dtype=np.float32)}
    page = report.render(store=store, rows=[int(store.image[i])], records={i: record}, scores={i: 1.0}, top_k=2,
                         header={"run": "<runs/x>"})
    assert "<script>" not in page and "<img src=x>" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "&lt;runs/x&gt;" in page


def test_missing_run_and_bad_options_are_gpv_errors(built, tmp_path):
    with pytest.raises(GPVError, match="no run or checkpoint"):
        report.build_report(tmp_path / "missing")
    with pytest.raises(GPVError, match="--n"):
        report.build_report(built["run"], n=0)
    with pytest.raises(GPVError, match="unknown split"):
        report.build_report(built["run"], split="dev")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH (.ci/run installs it; "
                                                          "Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(built):
    spec = importlib.util.spec_from_file_location("check_report_browser",
                                                  ROOT / "benchmarks" / "check_report_browser.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    page = built["run"] / "report.html"
    png = check.screenshot(page, page.with_suffix(".png"), width=1000, height=1500)   # kept for a person to see
    print(f"screenshot of the report: {png}")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (1000, 1500)
    assert check.distinct_colours(png) > 1000   # pictures and text, not a blank page
    images = built["page"].count("<img ")
    assert check.decoded_images(page) == (images, images) and images > 1    # the curves and every card picture


def test_pretraining_stages_validations_are_scalars_too():
    from gpvcli.viz.curves import scalars

    record = {"step": 4, "epoch": 0, "validation": {"tasks": {"ap50": 0.25, "ap50_agnostic": 0.5}, "selection": 0.25}}
    assert scalars(record) == {"val/ap50": 0.25, "val/ap50_agnostic": 0.5, "val/selection": 0.25}

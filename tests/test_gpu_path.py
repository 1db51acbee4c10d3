"""The GPU-rate input pipeline and train step, checked on the CPU: uint8 pixels normalized on the device,
reduced-size JPEG decoding, the feature cache's live entries, the CUDA-only switches, torch.compile."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gpvcli.data.images import IMAGENET_MEAN, IMAGENET_STD, device_images, load_image, pixels, stack_pixels


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)       # smooth enough to compress well
    return Image.fromarray(small).resize((w, h), Image.BILINEAR)


def test_pixels_normalized_on_the_device_equal_the_float_path():
    img = _image(72, 56)
    batch = stack_pixels([pixels(img, (40, 48)), pixels(_image(72, 56, 1), (40, 48))])
    assert batch.shape == (2, 3, 40, 48) and batch.dtype == torch.uint8
    assert batch.is_contiguous(memory_format=torch.channels_last)
    got = device_images(batch, torch.device("cpu"))
    arr = np.asarray(img.resize((48, 40), Image.BILINEAR), dtype=np.float32) / 255.0     # the oracle, in numpy
    want = (arr - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    assert torch.equal(got[0], torch.from_numpy(want).permute(2, 0, 1))
    assert got.is_contiguous()
    assert device_images(batch, torch.device("cpu"), channels_last=True).is_contiguous(
        memory_format=torch.channels_last)


def test_jpeg_decoded_at_reduced_size_only_when_the_input_is_at_most_half(tmp_path):
    path = tmp_path / "a.jpg"
    _image(400, 320).save(path, quality=95)
    assert load_image(path).size == (400, 320)
    assert load_image(path, reduce_to=(200, 160)).size == (200, 160)      # 1/2
    assert load_image(path, reduce_to=(100, 80)).size == (100, 80)        # 1/4
    assert load_image(path, reduce_to=(90, 70)).size == (100, 80)         # never below the input size
    assert load_image(path, reduce_to=(201, 160)).size == (400, 320)
    # a 1/4-scale DCT decode is about the mean of each 4x4 block of the full decode
    blocks = np.asarray(load_image(path), np.float32).reshape(80, 4, 100, 4, 3).mean((1, 3))
    reduced = np.asarray(load_image(path, reduce_to=(100, 80)), np.float32)
    assert np.abs(reduced - blocks).mean() < 2.0                          # grey levels; the image's spread: 39


def test_cuda_only_switches_stay_off_on_the_cpu():
    from gpvcli.train.config import TrainConfig
    from gpvcli.train.stages import loader_options
    from gpvcli.train.trainer import build_optimizer

    t = TrainConfig(num_workers=2, prefetch=3)
    assert loader_options(t, torch.device("cpu")) == {"num_workers": 2, "pin_memory": False, "prefetch_factor": 3}
    assert loader_options(t, torch.device("cuda", 0))["pin_memory"] is True
    assert "prefetch_factor" not in loader_options(TrainConfig(num_workers=0), torch.device("cpu"))
    opt = build_optimizer({"rest": [torch.nn.Parameter(torch.zeros(2))]}, t, torch.device("cpu"))
    assert not opt.param_groups[0]["fused"]


def test_cache_bound_caches_images_first_and_the_rest_runs_live(tiny_world, tmp_path):
    """A bound that holds only the whole images: the crops (cls samples) come as pixels and the frozen encoder
    computes them in the batch; the batch's visual rows equal the encoder's outputs for every sample."""
    from gpvcli.data.dataset import Collator, input_image
    from gpvcli.eval import runner
    from gpvcli.model.feature_cache import FeatureCache, bytes_per_sample, frozen_outputs
    from gpvcli.train import distributed
    from gpvcli.train.config import load_run_config
    from gpvcli.train.stages import GPVStage, cache_plan, ensure_feature_cache

    cfg = load_run_config("tiny", ["train.cache_form=int8", "train.precision=fp32"])
    stage = GPVStage(cfg, tiny_world["data"], torch.device("cpu"))
    ds = stage.train_set
    v = cfg.model.visual
    per = bytes_per_sample(queries=v.num_queries, state_dim=stage.visual.state_dim, roi_dim=stage.visual.roi_dim,
                           classes=v.num_classes, form="int8")
    images = {f"img:{int(ds.store.image_id[ds.store.image[i]])}" for i in ds.indices}
    keys, live = cache_plan(ds, len(images) * per + per / 2, per)
    assert set(keys) == images and live > 0
    cfg.train.cache_max_gb = len(images) * per / 1e9
    dist = distributed.setup("cpu")
    cache = ensure_feature_cache(stage.visual, cfg, ds, tmp_path / "train.h5", dist, show_progress=False)
    assert isinstance(cache, FeatureCache) and set(cache.keys()) == images
    ds.use_features = True
    ds.features = stage.collate.features = cache
    cls = [k for k, t in enumerate(ds.tasks) if t == "cls"][:2]
    other = [k for k, t in enumerate(ds.tasks) if t != "cls"][:2]
    order = [other[0], cls[0], other[1], cls[1]]
    batch = Collator(stage.tokenizer)([ds[k] for k in order])
    assert "feature_keys" in batch and "visual" not in batch        # a collator without the cache: keys only
    batch = stage.collate([ds[k] for k in order])
    assert batch["cached"].tolist() == [True, False, True, False] and len(batch["images"]) == 2
    got = runner.model_inputs(batch, torch.device("cpu"), encoder=stage.visual)["visual"]
    want = frozen_outputs(stage.visual, torch.stack([input_image(ds.store, int(ds.indices[k]), ds.image_size)
                                                     for k in order]))
    for name in ("boxes", "roi"):
        step = want[name].abs().amax(-1, keepdim=True) / 127
        assert ((got[name] - want[name]).abs() <= step / 2 + 1e-5).all()
        torch.testing.assert_close(got[name][[1, 3]], want[name][[1, 3]], rtol=1e-5, atol=1e-5)    # live: exact
    cache.close()


def test_compile_trains_like_eager(tiny_world, tmp_path, monkeypatch):
    """train.compile=true: the same losses as eager within float tolerance, through Dynamo's graph capture of
    every compiled part (backend "eager": no code generation, so it stays cheap on a CPU; inductor's kernels
    are bench_gpu.py's to run); the checkpoint holds the same weight names."""
    from conftest import FAST_TRAIN
    from safetensors.torch import load_file

    from gpvcli.train.trainer import train

    real = torch.nn.Module.compile
    compiled = []

    def compile_(module, **kwargs):
        compiled.append(type(module).__name__)
        real(module, backend="eager")
    monkeypatch.setattr(torch.nn.Module, "compile", compile_)
    overrides = FAST_TRAIN + ["train.max_steps=2", "train.val_samples=4"]
    losses = {}
    for name, compile_ in (("eager", "false"), ("compiled", "true")):
        train(tmp_path / name, data_dir=tiny_world["data"], overrides=overrides + [f"train.compile={compile_}"],
              show_progress=False)
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in records if "loss" in r]
    assert len(losses["eager"]) == 2 and "VisualEncoder" in compiled
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
    weights = load_file(tmp_path / "compiled" / "last" / "model.safetensors")
    assert weights.keys() == load_file(tmp_path / "eager" / "last" / "model.safetensors").keys()
    assert not any("_orig_mod" in k for k in weights)


def test_bench_gpu_smoke_on_the_cpu(tiny_world, tmp_path, monkeypatch):
    """benchmarks/bench_gpu.py at its reduced CPU size writes one row per measurement, each with a positive
    finite rate (not a speed check), and says that its figures are not GPU figures."""
    import runpy
    import sys

    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py", "--out", str(out), "--data", str(tiny_world["data"]),
                                      "--steps", "1", "--warmup", "1", "--no-compile"])
    runpy.run_path("benchmarks/bench_gpu.py", run_name="__main__")
    result = json.loads(out.read_text())
    assert "not GPU figures" in result["device"] and result["preset"] == "tiny" and result["precision"] == "bf16"
    assert [(r["row"], r["compile"]) for r in result["rows"]] == [
        ("train step, images", False), ("train step, cached", False), ("evaluation (test)", False)]
    for r in result["rows"]:
        assert 0 < r["samples_per_s"] < float("inf") and r["peak_gb"] is None
    assert result["rows"][1]["cache_build_samples_per_s"] > 0
    assert set(result["goals"]) == {"train step, images", "train step, cached", "peak_gb"}

import pytest
import torch

from gpvcli.errors import GPVError
from gpvcli.model.feature_cache import FeatureCache, build_feature_cache, visual_fingerprint
from gpvcli.model.visual import VisualConfig, build_visual

CFG = VisualConfig(image_size=[64, 64], backbone_hidden_sizes=[8, 16, 16, 32], backbone_embedding_size=8,
                   d_model=32, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=64, num_queries=5)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_visual(CFG)


def _items(n: int):
    g = torch.Generator().manual_seed(1)
    return [(f"img:{i}", torch.randn(3, 64, 64, generator=g)) for i in range(n)]


def test_cache_matches_encoder_outputs(tmp_path, encoder):
    items = _items(5)
    fp = visual_fingerprint(encoder, CFG)
    path = build_feature_cache(encoder.train(), items, tmp_path / "f.h5", batch_size=2, fingerprint=fp,
                               show_progress=True, total=5)
    assert encoder.training  # mode restored
    cache = FeatureCache(path, fp)
    assert len(cache) == 5 and "img:3" in cache and "img:9" not in cache
    assert cache.keys() == [k for k, _ in items]
    keys = ["img:4", "img:0", "img:4"]  # any order, repeats allowed
    got = cache.get(keys)
    with torch.no_grad():
        want = encoder.eval()(torch.stack([items[4][1], items[0][1], items[4][1]]))
    encoder.train()
    assert set(got) == set(want)
    for name in ("boxes", "objectness"):
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-6)
    for name in ("states", "roi"):
        assert got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=1e-3)
    with pytest.raises(GPVError, match="no entry 'img:7'"):
        cache.get(["img:7"])
    cache.close()


def test_fingerprint_tracks_weights_and_config(tmp_path, encoder):
    fp = visual_fingerprint(encoder, CFG)
    assert fp == visual_fingerprint(encoder, CFG)
    assert fp != visual_fingerprint(encoder, VisualConfig(**{**CFG.__dict__, "roi_size": 5}))
    other = build_visual(CFG)
    assert fp != visual_fingerprint(other, CFG)
    path = build_feature_cache(encoder, _items(2), tmp_path / "f.h5", fingerprint=fp)
    with pytest.raises(GPVError, match="computed with a different visual encoder"):
        FeatureCache(path, visual_fingerprint(other, CFG))
    assert len(FeatureCache(path, None)) == 2


def test_no_half_written_file_when_items_fail(tmp_path, encoder):
    def items():
        yield from _items(3)
        raise RuntimeError("image reader crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        build_feature_cache(encoder, items(), tmp_path / "f.h5", batch_size=2, fingerprint="x")
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(GPVError, match="appears twice"):
        build_feature_cache(encoder, _items(2) * 2, tmp_path / "g.h5", fingerprint="x")
    assert list(tmp_path.iterdir()) == []


def test_cache_keeps_the_region_colour_when_the_encoder_gives_it(tmp_path):
    from gpvcli.model.feature_cache import bytes_per_sample

    cfg = VisualConfig(**{**CFG.__dict__, "region_crops": [16, 16], "region_colour": True})
    torch.manual_seed(0)
    encoder = build_visual(cfg).eval()
    items = _items(3)
    fp = visual_fingerprint(encoder, cfg)
    cache = FeatureCache(build_feature_cache(encoder, items, tmp_path / "c.h5", batch_size=2, fingerprint=fp,
                                             show_progress=False, total=3), fp)
    got = cache.get(["img:2", "img:0"])
    with torch.no_grad():
        want = encoder(torch.stack([items[2][1], items[0][1]]))
    assert set(got) == set(want) and "colour" in got
    torch.testing.assert_close(got["colour"], want["colour"], rtol=1e-3, atol=1e-3)
    # float16 region vectors and colour, float32 boxes and objectness: the size estimate counts the colour too
    Q, K, D, C = 5, 2, 32, encoder.roi_dim
    expected = Q * (4 + K) * 4 + Q * (D + C) * 2 + Q * 64 * 2
    assert bytes_per_sample(queries=Q, state_dim=D, roi_dim=C, classes=K, form="float16", colour_dim=64) == expected
    import h5py
    with h5py.File(cache.path) as f:
        assert sum(f[n].id.get_storage_size() for n in f if n != "keys") == 3 * expected
    cache.close()


def test_int8_rows_by_hand():
    from gpvcli.model.feature_cache import quantize_rows

    rows = torch.tensor([[1.27, -0.5, 0.004], [0.0, 0.0, 0.0], [-2.54, 1.0, 0.3]])
    q, scale = quantize_rows(rows)
    # scale = max |row| / 127; q = round(value / scale)
    torch.testing.assert_close(scale, torch.tensor([0.01, 0.0, 0.02]))
    assert q.dtype == torch.int8
    assert q.tolist() == [[127, -50, 0], [0, 0, 0], [-127, 50, 15]]


def test_int8_cache_within_half_a_step_of_the_encoder_and_half_the_bytes(tmp_path, encoder):
    from gpvcli.model.feature_cache import bytes_per_sample

    items = _items(3)
    fp = visual_fingerprint(encoder, CFG)
    path = build_feature_cache(encoder, items, tmp_path / "q.h5", fingerprint=fp, form="int8")
    cache = FeatureCache(path, fp)
    assert cache.form == "int8"
    rows = cache.rows(["img:2", "img:0"])
    assert rows["roi"].dtype == rows["states"].dtype == torch.int8
    got = cache.get(["img:2", "img:0"])
    with torch.no_grad():
        want = encoder.eval()(torch.stack([items[2][1], items[0][1]]))
    torch.testing.assert_close(got["boxes"], want["boxes"], rtol=1e-6, atol=1e-6)
    for name in ("states", "roi"):
        step = want[name].abs().amax(-1, keepdim=True) / 127          # one int8 step of each row
        assert ((got[name] - want[name]).abs() <= step / 2 + 1e-6).all()
    # Q (4 + K) float32 + Q (D + C) int8 + 2Q float32 scales; float16: Q (D + C) 2-byte values instead
    Q, K, D, C = 5, 2, 32, 32
    per = {"int8": Q * (4 + K) * 4 + Q * (D + C) + 2 * Q * 4, "float16": Q * (4 + K) * 4 + Q * (D + C) * 2}
    for form, expected in per.items():
        assert bytes_per_sample(queries=Q, state_dim=D, roi_dim=C, classes=K, form=form) == expected
    import h5py
    with h5py.File(path) as f:
        assert sum(f[n].id.get_storage_size() for n in f if n != "keys") == 3 * per["int8"]
    cache.close()


@pytest.mark.parametrize("form", ["float16", "int8"])
def test_rows_from_memory_equal_rows_from_disk(tmp_path, encoder, form):
    fp = visual_fingerprint(encoder, CFG)
    path = build_feature_cache(encoder, _items(4), tmp_path / "m.h5", batch_size=3, fingerprint=fp, form=form)
    disk, memory = FeatureCache(path, fp), FeatureCache(path, fp).load()
    keys = ["img:3", "img:0", "img:3", "img:2"]      # any order, repeats allowed
    got, want = memory.rows(keys), disk.rows(keys)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].equal(want[name])
    path.unlink()                                    # read once, at opening: the file is no longer needed
    with torch.no_grad():
        want = encoder.eval()(_items(4)[1][1][None])
    torch.testing.assert_close(memory.get(["img:1"])["boxes"], want["boxes"], rtol=1e-6, atol=1e-6)
    with pytest.raises(GPVError, match="no entry 'img:7'"):
        memory.rows(["img:7"])

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from gpvcli.errors import GPVError
from gpvcli.train.sampling import make_batch_sampler

TASKS = ["vqa"] * 40 + ["cap"] * 25 + ["loc"] * 15 + ["cls"] * 10  # 90 samples
KINDS = ["uniform", "task", "balanced"]


def batches(kind, epoch=0, **kw):
    kw = {"batch_size": 12, "seed": 3, **kw}
    sampler = make_batch_sampler(kind, TASKS, **kw)
    sampler.set_epoch(epoch)
    out = list(sampler)
    assert len(out) == len(sampler)
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("drop_last", [True, False])
def test_batch_size_and_indices(kind, drop_last):
    out = batches(kind, drop_last=drop_last)
    assert out and all(len(b) == 12 for b in out)
    assert all(0 <= i < len(TASKS) for b in out for i in b)
    for b in out:  # no sample twice in a batch, unless a "task" batch tops up the 10 cls samples
        assert len(set(b)) == (10 if kind == "task" and TASKS[b[0]] == "cls" else 12)


def test_uniform_visits_every_sample_once_per_epoch():
    out = batches("uniform", drop_last=False)
    assert len(out) == 8
    assert {i for b in out for i in b} == set(range(len(TASKS)))
    dropped = batches("uniform")
    assert len(dropped) == 7 and len({i for b in dropped for i in b}) == 84


def test_task_batches_hold_one_task():
    out = batches("task")
    assert len(out) == 40 // 12 + 25 // 12 + 15 // 12  # cls has fewer than 12 samples
    assert all(len({TASKS[i] for i in b}) == 1 for b in out)
    assert {TASKS[b[0]] for b in out} == {"vqa", "cap", "loc"}
    orders = {tuple(TASKS[b[0]] for b in batches("task", epoch=e)) for e in range(5)}
    assert len(orders) > 1  # the batch order is shuffled, not task after task


def test_balanced_batches_hold_equal_counts():
    out = batches("balanced")
    assert len(out) == len(TASKS) // 12
    for b in out:
        assert Counter(TASKS[i] for i in b) == {"vqa": 3, "cap": 3, "loc": 3, "cls": 3}
    # cls (10 samples) needs 21 draws: every cls sample appears, cycling through permutations.
    assert {i for b in out for i in b if TASKS[i] == "cls"} == set(range(80, 90))


def test_balanced_with_a_task_smaller_than_its_share():
    tasks = ["vqa"] * 20 + ["loc"] * 2
    sampler = make_batch_sampler("balanced", tasks, batch_size=8, seed=0)
    for b in sampler:
        assert Counter(tasks[i] for i in b) == {"vqa": 4, "loc": 4}
        assert {i for i in b if tasks[i] == "loc"} == {20, 21}


def test_balanced_shares_differ_by_at_most_one():
    for b in batches("balanced", batch_size=10):
        counts = Counter(TASKS[i] for i in b)
        assert len(counts) == 4 and max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_per_seed_and_epoch(kind):
    assert batches(kind, epoch=2) == batches(kind, epoch=2)
    assert batches(kind, epoch=2) != batches(kind, epoch=3)
    assert batches(kind, epoch=2) != batches(kind, epoch=2, seed=4)


@pytest.mark.parametrize("kind", KINDS)
def test_ranks_partition_each_global_batch(kind):
    whole = batches(kind, epoch=1)
    shares = [batches(kind, epoch=1, rank=r, world_size=3) for r in range(3)]
    assert all(len(s) == len(whole) for s in shares)
    for step, global_batch in enumerate(whole):
        parts = [s[step] for s in shares]
        assert all(len(p) == 4 for p in parts)
        assert sorted(i for p in parts for i in p) == sorted(global_batch)


def test_balanced_rank_shares_are_balanced_too():
    for share in batches("balanced", batch_size=16, rank=1, world_size=2):
        assert Counter(TASKS[i] for i in share) == {"vqa": 2, "cap": 2, "loc": 2, "cls": 2}


def test_works_with_a_dataloader():
    data = torch.arange(len(TASKS))
    loader = DataLoader(data, batch_sampler=make_batch_sampler("task", TASKS, batch_size=6, seed=0))
    first = next(iter(loader))
    assert first.shape == (6,) and len({TASKS[int(i)] for i in first}) == 1


def test_bad_settings_raise_gpv_error():
    with pytest.raises(GPVError, match="unknown sampling"):
        make_batch_sampler("random", TASKS, batch_size=12, seed=0)
    with pytest.raises(GPVError, match="multiple"):
        make_batch_sampler("uniform", TASKS, batch_size=10, seed=0, world_size=4)
    with pytest.raises(GPVError):
        make_batch_sampler("uniform", TASKS, batch_size=12, seed=0, rank=2, world_size=2)
    with pytest.raises(GPVError):
        make_batch_sampler("uniform", [], batch_size=12, seed=0)

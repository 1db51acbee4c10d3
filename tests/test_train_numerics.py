"""What one optimizer step of `gpv train` computes: gradient accumulation over 2 micro-batches gives the
gradient of one batch of twice the size, and precision=bf16 runs the forward pass under bf16 autocast.

The gradients are read where the optimizer takes them (a wrapper around torch.optim.AdamW.step); the
forward pass's precision where every Linear layer returns its output."""

import json

import pytest
import torch
from conftest import FAST_TRAIN
from typer.testing import CliRunner

from gpvcli.cli.app import app

cli = CliRunner()

# vqa alone (the text loss averages over the samples of a micro-batch, so two halves of 8 average to the
# batch of 16); no dropout anywhere (model.text.frozen keeps BERT in eval mode), so both runs compute the
# same function of the same samples.
ONE_STEP = FAST_TRAIN + ["train.tasks=[vqa]", "train.max_steps=1", "train.val_samples=4", "model.dropout=0",
                         "model.text.frozen=true"]


def one_step(monkeypatch, run, data, *extra):
    """Train one optimizer step; return the gradients the optimizer saw at each step and the dtypes of
    the Linear outputs computed while the model was in training mode."""
    grads, dtypes = [], []
    real_step, real_linear = torch.optim.AdamW.step, torch.nn.Linear.forward

    def step(self, *args, **kwargs):
        grads.append([None if p.grad is None else p.grad.detach().clone()
                      for group in self.param_groups for p in group["params"]])
        return real_step(self, *args, **kwargs)

    def linear(self, x):
        out = real_linear(self, x)
        if self.training:
            dtypes.append(out.dtype)
        return out

    with monkeypatch.context() as m:
        m.setattr(torch.optim.AdamW, "step", step)
        m.setattr(torch.nn.Linear, "forward", linear)
        sets = [a for o in [*ONE_STEP, *extra] for a in ("--set", o)]
        result = cli.invoke(app, ["train", "--run", str(run), "--data", str(data), *sets])
    assert result.exit_code == 0, result.output
    return grads, dtypes


def test_two_micro_batches_give_the_gradient_of_one_double_batch(tiny_world, tmp_path, monkeypatch):
    whole, _ = one_step(monkeypatch, tmp_path / "whole", tiny_world["data"], "train.batch_size=16")
    halves, _ = one_step(monkeypatch, tmp_path / "halves", tiny_world["data"], "train.batch_size=16",
                         "train.grad_accum=2")
    assert len(whole) == len(halves) == 1                         # one optimizer step each
    (a,), (b,) = whole, halves
    assert len(a) == len(b) and sum(g is not None for g in a) > 10
    scale = max(g.abs().max().item() for g in a if g is not None)
    assert scale > 1e-3                                           # not all (near) zero
    for ga, gb in zip(a, b):
        assert (ga is None) == (gb is None)
        if ga is not None:     # float tolerance: summing two halves reorders the additions
            torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6 * scale)


def test_bf16_precision_runs_the_forward_pass_under_autocast(tiny_world, tmp_path, monkeypatch):
    _, bf16 = one_step(monkeypatch, tmp_path / "bf16", tiny_world["data"], "train.precision=bf16")
    _, fp32 = one_step(monkeypatch, tmp_path / "fp32", tiny_world["data"], "train.precision=fp32")
    assert bf16 and fp32
    assert set(fp32) == {torch.float32}
    assert set(bf16) == {torch.bfloat16}            # every Linear of the training forward pass
    for run in ("bf16", "fp32"):
        losses = [json.loads(x)["loss"] for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
                  if '"loss"' in x]
        assert len(losses) == 1 and losses[0] > 0
    bf16_loss, fp32_loss = (json.loads((tmp_path / r / "metrics.jsonl").read_text().splitlines()[0])["loss"]
                            for r in ("bf16", "fp32"))
    assert bf16_loss != fp32_loss and bf16_loss == pytest.approx(fp32_loss, rel=0.05)

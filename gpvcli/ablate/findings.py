"""Fig. 1 (relative gain of multitask over single-task training) and the paper's findings checked on this run.

Each finding is a claim of the seed's Sec. 3 with the seed's own numbers: a comparison of two table cells
(the direction is that of the paper's numbers) or one cell against zero. This run's difference (means over
seeds) counts only where it exceeds its noise, by one of two rules (each finding names its rule):
    seeds: with at least 2 seeds of every cell, |difference| > 2 standard errors of the difference
        (sqrt of the sum of std^2 / n over the cells, std over seeds);
    bootstrap: with one seed, a paired bootstrap over the test samples (the per-sample scores of
        eval/TASK/predictions.jsonl, the samples both cells scored, resampled BOOTSTRAP times with a fixed
        seed): the 95% percentile interval of the difference of means excludes 0.
Verdict: "agrees" (a counted difference in the paper's direction), "disagrees" (a counted one against it),
"within noise" (not counted), or "pending" (a variant not finished). A claim of zero (the paper's 0.0)
agrees when this run scores exactly 0, is within noise when the interval includes 0, else disagrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpvcli import io
from gpvcli.ablate.tables import metric_stat, runs_of, scale
from gpvcli.ablate.variants import ALL, Variant
from gpvcli.data import categories as cats

# Fig. 1 layout: rows top to bottom, columns left to right (the figure's "cls, loc" and "vqa, cap").
FIG1_ROWS = (("cls", "Classification"), ("loc", "Localization"), ("vqa", "VQA"), ("cap", "Captioning"))
FIG1_COLUMNS = ((cats.SEEN, "S"), (cats.HELD_CLS_LOC, "cls, loc"), (cats.HELD_VQA_CAP, "vqa, cap"))


def figure1_gains(results: dict[str, dict]) -> dict:
    """{task: {group: gain in % or None}}: 100 * (multitask - single task) / single task, per category group
    (each group's value is the mean over its categories, as in the figure). None where either model is
    missing or the single-task value is 0 (the figure leaves that cell out)."""
    multi = runs_of(ALL, results)
    gains = {}
    for task, _ in FIG1_ROWS:
        single = runs_of(Variant((task,)), results)
        gains[task] = {}
        for group, _ in FIG1_COLUMNS:
            a = metric_stat(single, task, group=group)
            b = metric_stat(multi, task, group=group)
            ok = a is not None and b is not None and a["mean"] != 0
            gains[task][group] = 100 * (b["mean"] - a["mean"]) / a["mean"] if ok else None
    return gains


def save_heatmap(gains: dict, path: Path) -> Path:
    """Fig. 1 as a PNG: relative gains in %, diverging colours centred at 0, missing cells grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.array([[np.nan if gains[t][g] is None else gains[t][g] for g, _ in FIG1_COLUMNS]
                     for t, _ in FIG1_ROWS])
    finite = grid[np.isfinite(grid)]
    limit = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-limit, vmax=limit)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}", ha="center", va="center")
    ax.set_xticks(range(len(FIG1_COLUMNS)), [name for _, name in FIG1_COLUMNS])
    ax.set_yticks(range(len(FIG1_ROWS)), [name for _, name in FIG1_ROWS])
    ax.set_title("Relative gain (%) of multitask over single-task")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class Cell:
    """A table cell: a variant (seed-free), a task and a column (all/seen/unseen); `paper` is the seed's
    number on the paper's scale."""

    label: str
    variant: Variant
    task: str
    column: str
    paper: float


@dataclass(frozen=True)
class Claim:
    study: str
    text: str
    left: Cell
    right: Cell | None = None   # None: the claim compares `left` with zero


def _t1(letter: str, tasks: tuple[str, ...], task: str, column: str, paper: float) -> Cell:
    return Cell(f"T1[{letter}] {task} {column}", Variant(tasks), task, column, paper)


NO_REL = Variant(ALL.tasks, relevance_conditioning=False)
TASK_HEADS = Variant(ALL.tasks, heads="task")
_TASK_NAMES = {"vqa": "VQA", "cap": "captioning", "loc": "localization", "cls": "classification"}
_SINGLE = {"vqa": ("a", 41.9, 47.7), "cap": ("b", 0.524, 0.560), "loc": ("c", 16.4, 25.0), "cls": ("d", 0.0, 5.4)}
_RELEVANCE = {"vqa": (58.8, 59.2), "cap": (0.908, 0.926), "loc": (64.7, 65.0), "cls": (75.4, 75.9)}
_HEADS = {"vqa": (45.86, 46.91), "cap": (0.533, 0.547), "loc": (26.13, 27.75), "cls": (0.00, 5.10)}

CLAIMS = (
    *(Claim("tasks", f"multitask improves {_TASK_NAMES[t]} unseen over {_TASK_NAMES[t]} alone",
            _t1(letter, (t,), t, "unseen", a), _t1("h", ALL.tasks, t, "unseen", b))
      for t, (letter, a, b) in _SINGLE.items()),
    Claim("tasks", "VQA+Cap+Loc improves VQA unseen over VQA+Cap",
          _t1("e", ("vqa", "cap"), "vqa", "unseen", 42.7), _t1("g", ("vqa", "cap", "loc"), "vqa", "unseen", 46.6)),
    Claim("tasks", "VQA+Cap+Loc improves captioning unseen over VQA+Cap",
          _t1("e", ("vqa", "cap"), "cap", "unseen", 0.536), _t1("g", ("vqa", "cap", "loc"), "cap", "unseen", 0.559)),
    Claim("tasks", "Cls alone gets zero unseen classification", _t1("d", ("cls",), "cls", "unseen", 0.0)),
    Claim("tasks", "Cls+Loc gets zero unseen classification", _t1("f", ("loc", "cls"), "cls", "unseen", 0.0)),
    Claim("tasks", "multitask gets non-zero unseen classification", _t1("h", ALL.tasks, "cls", "unseen", 5.4)),
    *(Claim("relevance", f"relevance conditioning slightly hurts {_TASK_NAMES[t]} (test)",
            Cell(f"T2[a] {t} test", ALL, t, "all", a), Cell(f"T2[b] {t} test", NO_REL, t, "all", b))
      for t, (a, b) in _RELEVANCE.items()),
    *(Claim("heads", f"head per modality is better than head per task on unseen {_TASK_NAMES[t]}",
            Cell(f"T3[a] {t} unseen", TASK_HEADS, t, "unseen", a), Cell(f"T3[b] {t} unseen", ALL, t, "unseen", b))
      for t, (a, b) in _HEADS.items()),
)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _relation(sign: int, single: bool) -> str:
    if single:
        return "= 0" if sign == 0 else "> 0" if sign > 0 else "< 0"
    return {1: "<", 0: "=", -1: ">"}[sign]


def _describe(values: list[float], cells: list[Cell], sign: int) -> str:
    """'41.9 vs 47.7 (<)' or '5.4 (> 0)'."""
    text = " vs ".join(_number(v, c.task) for v, c in zip(values, cells))
    return f"{text} ({_relation(sign, len(cells) == 1)})"


def _number(value: float, task: str, signed: bool = False) -> str:
    return f"{value:{'+' if signed else ''}.{3 if task == 'cap' else 1}f}"


BOOTSTRAP = 2000        # resamples of the paired bootstrap
NOISE_SE = 2.0          # with seeds, a difference counts beyond this many standard errors
RULES = {"seeds": f"difference beyond {NOISE_SE:g} standard errors over seeds",
         "bootstrap": f"paired bootstrap over test samples ({BOOTSTRAP} resamples): 95% interval excludes 0",
         "none": "no per-sample scores: the sign alone"}

# Per-sample scores of a finished variant's task: (variant name, task) -> {sample_id: (score, unseen)}.
SampleScores = Callable[[str, str], "dict[str, tuple[float, bool]] | None"]


def bootstrap_interval(diff: np.ndarray, *, resamples: int = BOOTSTRAP, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `diff` (per-sample differences, or values) over `resamples`
    resamples of its samples with replacement."""
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // max(1, len(diff)))
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        means[start:start + k] = diff[rng.integers(0, len(diff), size=(k, len(diff)))].mean(1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _paired(cells: list[Cell], runs: list[list[dict]], samples: SampleScores) -> np.ndarray | None:
    """Per-sample (right - left) scores, or left's scores, on the paper's scale, over the samples of the
    cells' column that every cell scored; from the lowest seed the cells share (None without scores)."""
    seeds = set.intersection(*({r["seed"] for r in rs} for rs in runs))
    if not seeds:
        return None
    seed = min(seeds)
    columns = []
    for cell, rs in zip(cells, runs):
        run = next(r for r in rs if r["seed"] == seed)
        scores = samples(run["variant"], cell.task)
        if not scores:
            return None
        keep = {"all": lambda u: True, "seen": lambda u: not u, "unseen": lambda u: u}[cell.column]
        columns.append({k: v for k, (v, unseen) in scores.items() if keep(unseen)})
    common = sorted(set.intersection(*(set(c) for c in columns)))
    if not common:
        return None
    values = [np.array([c[k] for k in common]) * scale(cell.task) for c, cell in zip(columns, cells)]
    return values[0] if len(values) == 1 else values[1] - values[0]


def noise_test(cells: list[Cell], runs: list[list[dict]], stats: list[dict], diff: float,
               samples: SampleScores | None) -> tuple[str, bool, str]:
    """(rule, whether `diff` counts, the difference with its noise as text)."""
    task = cells[0].task
    if min(s["n"] for s in stats) >= 2:
        se = math.sqrt(sum(s["std"] ** 2 / s["n"] for s in stats))
        return "seeds", abs(diff) > NOISE_SE * se, f"{_number(diff, task, True)} ± {_number(NOISE_SE * se, task)}"
    paired = None if samples is None else _paired(cells, runs, samples)
    if paired is None:
        return "none", diff != 0, _number(diff, task, True)
    low, high = bootstrap_interval(paired)
    counts = low > 0 or high < 0
    return "bootstrap", counts, (f"{_number(diff, task, True)} [{_number(low, task, True)}, "
                                 f"{_number(high, task, True)}] (n={len(paired)})")


def check_claims(results: dict[str, dict], studies: tuple[str, ...],
                 samples: SampleScores | None = None) -> list[dict]:
    """Each claim of `studies`: {"study", "claim", "cells", "paper", "ours", "difference", "rule", "verdict"}
    (see the module docstring; `samples` gives the per-sample scores for the bootstrap). The paper's
    direction is the sign of (right - left), or of left alone."""
    out = []
    for claim in CLAIMS:
        if claim.study not in studies:
            continue
        cells = [c for c in (claim.left, claim.right) if c is not None]
        runs = [runs_of(c.variant, results) for c in cells]
        stats = [metric_stat(r, c.task, c.column) for r, c in zip(runs, cells)]
        paper = [c.paper for c in cells]
        single = claim.right is None
        paper_sign = _sign(paper[0] if single else paper[1] - paper[0])
        row = {"study": claim.study, "claim": claim.text, "cells": [c.label for c in cells],
               "paper": _describe(paper, cells, paper_sign)}
        if any(s is None for s in stats):
            out.append({**row, "ours": "pending", "difference": "", "rule": "", "verdict": "pending"})
            continue
        means = [s["mean"] for s in stats]
        diff = means[0] if single else means[1] - means[0]
        sign = _sign(round(diff / scale(claim.left.task), 9))
        rule, counts, text = noise_test(cells, runs, stats, diff, samples)
        if paper_sign == 0:
            verdict = "agrees" if sign == 0 else "disagrees" if counts else "within noise"
        elif counts and sign != 0:
            verdict = "agrees" if sign == paper_sign else "disagrees"
        else:
            verdict = "within noise"
        out.append({**row, "ours": _describe(means, cells, sign), "difference": text, "rule": rule,
                    "verdict": verdict})
    return out


def rules_used(checked: list[dict]) -> list[str]:
    """The descriptions of the noise rules that `checked` used."""
    return [RULES[r] for r in RULES if any(f["rule"] == r for f in checked)]

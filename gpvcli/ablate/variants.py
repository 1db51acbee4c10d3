"""The ablation variants: what each study changes, how a variant is named, and its resolved config.

A variant is its content: the tasks it trains on, relevance conditioning on/off, the text heads
(per modality / per task) and the seed. Its name spells that content out
(`vqa-cap-loc-cls_rel_modality_s0`), so a model shared by several studies (the four-task multitask
model is Table 1 [h], Table 2 [a] and Table 3 [b]) has one name, one folder, and is trained once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

from gpvcli import quickstart
from gpvcli.ablate.pretrain import pretrains
from gpvcli.config import to_dict
from gpvcli.errors import GPVError
from gpvcli.train.config import RunConfig, load_run_config

TASK_ORDER = ("vqa", "cap", "loc", "cls")
TASK_LABELS = {"vqa": "VQA", "cap": "Cap", "loc": "Loc", "cls": "Cls"}
STUDY_NAMES = ("tasks", "relevance", "heads")

# Training recipe per preset for the ablation (applied before --set), and the default step budget of one
# variant. tiny: the synthetic study on 2 CPU cores; every variant is the quickstart's GPV stage started from
# the shared pretraining (`gpvcli.ablate.pretrain`), its visual encoder frozen and its features cached.
# Presets without a recipe keep their own training settings; their default budget is the full schedule
# (train.epochs) of the four-task model.
RECIPES = {
    # 1,500 steps of 32 samples from cached features (the quickstart's GPV stage runs 2,400), so that --study all
    # (10 variants, each scored on the whole test split with the grounding checks, from the shared test
    # features) fits within an hour on 2 CPU cores (measured times in the README).
    "tiny": {"steps": 1500, "overrides": ["train.val_samples=100", "train.save_every=100"]},
}
# Config fields a variant sets; --set must leave them alone.
VARIANT_FIELDS = ("train.tasks", "model.relevance_conditioning", "model.heads", "train.seed", "train.max_steps",
                  "train.epochs")
# How a variant's steps follow from the budget (the four-task model's steps): "epochs", the paper's unit,
# gives every variant the same passes over its own training samples (steps in proportion to them), so that
# a task's samples are seen as often alone as in multitask training; "steps" gives every variant the same steps
# (a task alone then sees its samples several times as often as in the four-task model).
SCHEDULES = ("epochs", "steps")
# The config fields each study varies (everything else must be equal between its variants; under the epochs
# schedule Table 1's rows also differ in train.max_steps and train.epochs).
STUDY_CHANGES = {"tasks": ("train.tasks",), "relevance": ("model.relevance_conditioning",),
                 "heads": ("model.heads",)}

_NAME = re.compile(r"^(?P<tasks>[a-z]+(?:-[a-z]+)*)_(?P<rel>rel|norel)_(?P<heads>modality|task)_s(?P<seed>\d+)$")


@dataclass(frozen=True)
class Variant:
    """One trained-and-evaluated model of the study; tasks in TASK_ORDER."""

    tasks: tuple[str, ...]
    relevance_conditioning: bool = True
    heads: str = "modality"
    seed: int = 0

    @property
    def name(self) -> str:
        rel = "rel" if self.relevance_conditioning else "norel"
        return f"{'-'.join(self.tasks)}_{rel}_{self.heads}_s{self.seed}"

    @property
    def content(self) -> Variant:
        """The variant without its seed: what a table row aggregates over seeds."""
        return dataclasses.replace(self, seed=0)

    def with_seed(self, seed: int) -> Variant:
        return dataclasses.replace(self, seed=seed)

    def overrides(self) -> list[str]:
        return [f"train.tasks=[{','.join(self.tasks)}]",
                f"model.relevance_conditioning={str(self.relevance_conditioning).lower()}",
                f"model.heads={self.heads}", f"train.seed={self.seed}"]

    @classmethod
    def from_name(cls, name: str) -> Variant:
        m = _NAME.match(name)
        if not m:
            raise GPVError(f"{name!r} is not a variant name",
                           hint="names look like vqa-cap_rel_modality_s0 (see `gpv ablate --plan`)")
        return cls(tasks=parse_tasks(m["tasks"].replace("-", ",")), relevance_conditioning=m["rel"] == "rel",
                   heads=m["heads"], seed=int(m["seed"]))


def parse_tasks(text: str) -> tuple[str, ...]:
    """'cls,vqa' -> ('vqa', 'cls'): the ablation's tasks in TASK_ORDER."""
    tasks = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(tasks - set(TASK_ORDER))
    if unknown or not tasks:
        raise GPVError(f"--tasks {text!r}: unknown task {unknown[0] if unknown else '(none)'}",
                       hint=f"choose from {','.join(TASK_ORDER)}")
    return tuple(t for t in TASK_ORDER if t in tasks)


def tasks_label(tasks: tuple[str, ...]) -> str:
    """The paper's model name for a task set: GPV-I-VQA+Cap, GPV-I-Multitask."""
    if tasks == TASK_ORDER:
        return "GPV-I-Multitask"
    return "GPV-I-" + "+".join(TASK_LABELS[t] for t in tasks)


ALL = Variant(TASK_ORDER)


@dataclass(frozen=True)
class Row:
    label: str        # "[a] GPV-I-VQA"
    variant: Variant  # seed 0


def _row(letter: str, tasks: tuple[str, ...], label: str | None = None, **kwargs) -> Row:
    return Row(f"[{letter}] {label or tasks_label(tasks)}", Variant(tasks, **kwargs))


STUDIES = {
    "tasks": ("Table 1. Task ablation (COCO-SCE test)", (
        _row("a", ("vqa",)), _row("b", ("cap",)), _row("c", ("loc",)), _row("d", ("cls",)),
        _row("e", ("vqa", "cap")), _row("f", ("loc", "cls"), "GPV-I-Cls+Loc"), _row("g", ("vqa", "cap", "loc")),
        _row("h", TASK_ORDER))),
    "relevance": ("Table 2. Relevance conditioning ablation (test)", (
        _row("a", TASK_ORDER, "Multitask GPV-I"), _row("b", TASK_ORDER, "w/o rel. cond.",
                                                         relevance_conditioning=False))),
    "heads": ("Table 3. Modality-specific vs. task-specific heads (test)", (
        _row("a", TASK_ORDER, "Head per Task", heads="task"), _row("b", TASK_ORDER, "Head per Modality"))),
}


def select_studies(study: str) -> tuple[str, ...]:
    if study == "all":
        return STUDY_NAMES
    if study not in STUDY_NAMES:
        raise GPVError(f"unknown study {study!r}", hint="use tasks, relevance, heads or all")
    return (study,)


def study_variants(studies: tuple[str, ...], *, tasks: tuple[str, ...] | None = None, seeds: int = 1) -> list[Variant]:
    """The distinct variants of `studies` (or of the one Table 1 row `tasks`), each with seeds 0..seeds-1, seed by
    seed: an ablation stopped part-way has whole tables of its first seeds."""
    if seeds < 1:
        raise GPVError(f"--seeds {seeds}: need at least 1")
    if tasks is not None:
        contents = [Variant(tasks)]
    else:
        contents = [row.variant for s in studies for row in STUDIES[s][1]]
    return [v.with_seed(seed) for seed in range(seeds) for v in dict.fromkeys(contents)]


def check_sets(sets: list[str]) -> None:
    for text in sets:
        key = text.split("=", 1)[0].strip()
        if key in VARIANT_FIELDS:
            raise GPVError(f"--set {key} is what the ablation varies",
                           hint="choose tasks with --tasks, seeds with --seeds, studies with --study and steps "
                                "with --budget and --schedule")


def train_samples(data_dir: Path) -> dict[str, int]:
    """Training samples of each ablation task in the prepared data."""
    from gpvcli.data.store import SplitStore

    tasks = SplitStore(Path(data_dir) / "train.h5").tasks
    return {t: tasks.count(t) for t in TASK_ORDER}


def default_steps(config: str, samples: dict[str, int], sets: list[str]) -> int:
    """The four-task model's step budget at --budget 1 (see RECIPES); `samples`: `train_samples`."""
    if config in RECIPES:
        return RECIPES[config]["steps"]
    t = load_run_config(config, sets).train
    return t.epochs * max(1, sum(samples.values()) // t.batch_size)


def check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise GPVError(f"--schedule {schedule!r} is unknown", hint=f"use {' or '.join(SCHEDULES)}")


def variant_steps(variant: Variant, *, steps: int, schedule: str, samples: dict[str, int]) -> int:
    """A variant's steps when the four-task model trains `steps` (see SCHEDULES)."""
    check_schedule(schedule)
    if schedule == "steps":
        return steps
    return max(1, round(steps * sum(samples[t] for t in variant.tasks) / sum(samples.values())))


def common_overrides(config: str, *, sets: list[str], start: str | Path | None = None) -> list[str]:
    """Overrides every variant shares: the preset's recipe, the start (the GPV stage of the quickstart's
    recipe from checkpoint `start`, see `gpvcli.ablate.pretrain`), then the user's --set."""
    check_sets(sets)
    recipe = RECIPES.get(config, {}).get("overrides", [])
    if start is None:
        begin = []
    elif pretrains(config):
        begin = quickstart.gpv_overrides(Path(start))
    else:
        begin = [f"train.init_from={Path(start).resolve()}"]
    return [*recipe, *begin, *sets]


def variant_overrides(variant: Variant, settings: dict) -> list[str]:
    """All overrides of a variant of an ablation's `settings` (`gpvcli.ablate.study.study_settings`): the common
    ones, the variant's own and its steps. train.epochs is raised to the steps (an epoch has at least one
    step) so that the step cap ends every run."""
    steps = variant_steps(variant, steps=settings["steps"], schedule=settings["schedule"],
                          samples=settings["train_samples"])
    return [*settings["overrides"], *variant.overrides(), f"train.max_steps={steps}", f"train.epochs={steps}"]


def resolve(variant: Variant, settings: dict) -> RunConfig:
    """The resolved run config of a variant of an ablation's `settings`."""
    return load_run_config(settings["config"], variant_overrides(variant, settings))


def steps_for(budget: float, base: int) -> int:
    if not budget > 0 or math.isinf(budget):
        raise GPVError(f"--budget {budget}: need a positive number")
    return max(1, round(budget * base))


def flat(data: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}."""
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(a: RunConfig, b: RunConfig) -> list[str]:
    """The dotted config fields whose values differ between two run configs."""
    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))

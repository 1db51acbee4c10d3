"""The paper's Tables 1-3 from finished variants: mean ± std over seeds, best and second best per column.

A table is plain data (saved in ablation.json):
    {"study", "title", "columns": [{"name", "task", "column"}], "rows": [{"label", "variant", "status",
     "info": {name: text}, "cells": [stat | None], "marks": ["best" | "second" | None]}]}
stat = {"mean", "std", "n"} on the paper's scale (VQA, Loc, Cls in %, Cap CIDEr-D as is); std is the
sample standard deviation over seeds (0 with one seed); None where the variant does not do that task.
Each table ends with one "dep." column per task: the grounding check of `gpv evaluate` (the score minus
the score with the task's image or query swapped; None where a result has no check).
"""

from __future__ import annotations

import numpy as np

from gpvcli.ablate.variants import STUDIES, TASK_ORDER, Variant, tasks_label
from gpvcli.data import categories as cats

COLUMN_NAMES = {"all": "Test", "seen": "Seen", "unseen": "Unseen"}
DEPENDENCE = "dependence"
SHORT_NAMES = {"vqa": "VQA", "cap": "Cap.", "loc": "Loc.", "cls": "Class."}


def scale(task: str) -> float:
    return 1.0 if task == "cap" else 100.0


def runs_of(content: Variant, results: dict[str, dict]) -> list[dict]:
    """The finished results of every seed of `content`, by seed."""
    runs = [r for r in results.values() if Variant.from_name(r["variant"]).content == content]
    return sorted(runs, key=lambda r: r["seed"])


def stat(values: list[float]) -> dict | None:
    if not values:
        return None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def metric_stat(runs: list[dict], task: str, column: str = "all", group: str | None = None) -> dict | None:
    """Mean ± std over seeds of a task metric (column all/seen/unseen/dependence, or a category group's
    mean)."""
    values = []
    for r in runs:
        row = r["metrics"].get(task)
        if row is None:
            value = None
        elif column == DEPENDENCE:
            value = (row.get("grounding") or {}).get(DEPENDENCE)
        else:
            value = row["groups"][group] if group else row[column]
        if value is not None:
            values.append(value * scale(task))
    return stat(values)


def mark(values: list[float | None]) -> list[str | None]:
    """'best' for the largest value, 'second' for the next distinct one; nothing with fewer than 2 values."""
    distinct = sorted({round(v, 9) for v in values if v is not None}, reverse=True)
    if len([v for v in values if v is not None]) < 2:
        return [None] * len(values)
    names = {distinct[0]: "best", **({distinct[1]: "second"} if len(distinct) > 1 else {})}
    return [None if v is None else names.get(round(v, 9)) for v in values]


def status(runs: list[dict], seeds: int) -> str:
    if not runs:
        return "pending"
    return "done" if len(runs) >= seeds else f"{len(runs)}/{seeds} seeds"


def concepts_seen(tasks: tuple[str, ...]) -> dict[str, str]:
    """Table 1's "concepts seen during training": H_vqa,cap through loc/cls, H_cls,loc through vqa/cap."""
    seen = {cats.SEEN: True, cats.HELD_VQA_CAP: bool({"loc", "cls"} & set(tasks)),
            cats.HELD_CLS_LOC: bool({"vqa", "cap"} & set(tasks))}
    return {g: "✓" if v else "" for g, v in seen.items()}


def study_rows(study: str, results: dict[str, dict]) -> list[tuple[str, Variant]]:
    """(label, variant) rows of a study; Table 1 adds rows for finished task sets outside the paper's eight."""
    rows = [(row.label, row.variant) for row in STUDIES[study][1]]
    if study == "tasks":
        known = {v for _, v in rows}
        extra = {Variant(tuple(r["tasks"])) for r in results.values()
                 if r["relevance_conditioning"] and r["heads"] == "modality"} - known
        order = sorted(extra, key=lambda v: (len(v.tasks), [TASK_ORDER.index(t) for t in v.tasks]))
        rows += [(f"[{chr(ord('i') + k)}] {tasks_label(v.tasks)}", v) for k, v in enumerate(order)]
    return rows


def build_table(study: str, results: dict[str, dict], seeds: int = 1) -> dict:
    """One of the paper's tables from the finished `results` (variant name -> result.json)."""
    if study == "relevance":
        columns = [{"name": SHORT_NAMES[task], "task": task, "column": "all"} for task in TASK_ORDER]
    else:
        columns = [{"name": f"{SHORT_NAMES[task]} {COLUMN_NAMES[col]}", "task": task, "column": col}
                   for task in TASK_ORDER for col in COLUMN_NAMES]
    columns += [{"name": f"{SHORT_NAMES[task]} dep.", "task": task, "column": DEPENDENCE} for task in TASK_ORDER]
    rows = []
    for label, variant in study_rows(study, results):
        runs = runs_of(variant, results)
        info = concepts_seen(variant.tasks) if study == "tasks" else {}
        if study == "heads":
            info = {"Params": format_params(runs[0]["parameters"]) if runs else ""}
        rows.append({"label": label, "variant": variant.name, "status": status(runs, seeds), "info": info,
                     "cells": [metric_stat(runs, c["task"], c["column"]) if c["task"] in variant.tasks else None
                               for c in columns]})
    for k in range(len(columns)):
        marks = mark([None if r["cells"][k] is None else r["cells"][k]["mean"] for r in rows])
        for row, m in zip(rows, marks):
            row.setdefault("marks", []).append(m)
    return {"study": study, "title": STUDIES[study][0], "columns": columns, "rows": rows}


def format_params(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def format_stat(s: dict | None, task: str) -> str:
    if s is None:
        return "-"
    digits = 3 if task == "cap" else 1
    text = f"{s['mean']:.{digits}f}"
    return f"{text} ± {s['std']:.{digits}f}" if s["n"] > 1 else text


def cell_texts(table: dict, style: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a table as text; marks become **bold** / <u>underline</u> (style "markdown")
    or rich markup (style "rich")."""
    from rich.markup import escape

    wrap = {"markdown": {"best": "**{}**", "second": "<u>{}</u>"},
            "rich": {"best": "[bold green]{}[/]", "second": "[underline]{}[/]"}}[style]
    plain = escape if style == "rich" else str
    header = [*table["rows"][0]["info"], *(c["name"] for c in table["columns"]), "Status"]
    rows = []
    for row in table["rows"]:
        cells = [format_stat(s, c["task"]) if m is None else wrap[m].format(format_stat(s, c["task"]))
                 for s, m, c in zip(row["cells"], row["marks"], table["columns"])]
        rows.append([plain(row["label"]), *row["info"].values(), *cells, row["status"]])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]], first: str = "Model") -> str:
    lines = ["| " + " | ".join([first, *header]) + " |", "|" + "---|" * (len(header) + 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)

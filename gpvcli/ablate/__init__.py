"""`gpv ablate`: the paper's ablations (seed Sec. 3: Tables 1-3 and Fig. 1) on one prepared dataset.

    from gpvcli.ablate import run_ablation, plan, collect
    report = run_ablation(study="all", budget=1.0, seeds=1)    # train, evaluate, tables, findings

variants.py names variants by content and resolves their configs; study.py runs, plans and collects
(folder layout in its docstring); tables.py builds Tables 1-3; findings.py Fig. 1 and the paper's claims.
"""

from gpvcli.ablate.study import collect, plan, run_ablation, run_variant

__all__ = ["collect", "plan", "run_ablation", "run_variant"]

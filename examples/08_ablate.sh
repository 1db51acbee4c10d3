#!/usr/bin/env bash
# 08 · gpv ablate: the paper's ablations (Table 1: task combinations and Fig. 1; Table 2: relevance
# conditioning; Table 3: heads), every variant trained and evaluated with the same budget.
# Shown the way a cluster runs it: plan the jobs, run them (here only the first), collect the tables.
#
# Writes under $RUNS/ablate/:
#   plan.sh, plan.txt, settings.json    --plan: one command per variant of the three studies
#   vqa_rel_modality_s0/                the first variant (VQA alone, Table 1's first row): a run folder
#                                       with eval/ and result.json
#   ablation.json, ablation.md, figure1.png    --collect: the tables of the finished variants (the
#                                       others shown as pending) and the paper's findings checked
# At full size a variant is 600 steps of 32 samples, about 5 min on 2 CPU cores, so all 10 take about an
# hour. On one machine `gpv ablate --study all` does the three steps in one go (and resumes).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

out="$RUNS/ablate"

# 1. The plan: one self-contained command per variant, nothing run. On GPUs add
#    --launcher "torchrun --nproc_per_node=8".
gpv ablate --study all --plan --out "$out" --budget "$ABLATE_BUDGET" \
  --eval-samples "$ABLATE_EVAL_SAMPLES" $SETS

# 2. The jobs: `bash plan.sh` runs them all in turn, `bash plan.sh I` the I-th one (a job-array task:
#    sbatch --array=0-9 --wrap 'bash plan.sh $SLURM_ARRAY_TASK_ID'). Here only the first.
bash "$out/plan.sh" 0

# 3. The tables, from whatever has finished (rerun it as more jobs finish).
gpv ablate --collect --study all --out "$out"

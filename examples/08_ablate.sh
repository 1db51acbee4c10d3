#!/usr/bin/env bash
# 08 · gpv ablate: the paper's ablations (Table 1: task combinations and Fig. 1; Table 2: relevance
# conditioning; Table 3: heads), every variant trained from the same pretrained encoders and evaluated
# with the same budget. Shown the way a cluster runs it: plan the jobs, run them (here the pretraining
# and the first variant), collect the tables.
#
# Writes under $RUNS/ablate/:
#   plan.sh, plan.txt, settings.json    --plan: the pretraining command, then one per variant of the studies
#   pretrained/                         the shared starting point: the quickstart's backbone warm-up and
#                                       alignment stages, and the visual feature cache every variant reads
#   vqa_rel_modality_s0/                the first variant (VQA alone, Table 1's first row): a run folder
#                                       with eval/ and result.json
#   ablation.json, ablation.md, figure1.png    --collect: the tables of the finished variants (the
#                                       others shown as pending) and the paper's findings checked
# At full size the pretraining is the quickstart's first two stages (about 9 min on 2 CPU cores) and a
# variant 1,500 steps of 32 samples from cached features plus its evaluation on the whole test split (about
# 5 min), so all 10 take about an hour after the pretraining. On one machine `gpv ablate --study all` does
# the three steps in one go (and resumes).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

out="$RUNS/ablate"

# 1. The plan: the pretraining, then one self-contained command per variant, nothing run. On GPUs add
#    --launcher "torchrun --nproc_per_node=8".
gpv ablate --study all --plan --out "$out" --budget "$ABLATE_BUDGET" \
  --eval-samples "$ABLATE_EVAL_SAMPLES" $SETS

# 2. The jobs: `bash plan.sh` runs them all in turn, `bash plan.sh I` the I-th one: 0 the pretraining,
#    then the variants (a job array that waits for it: jid=$(sbatch --parsable --wrap 'bash plan.sh 0');
#    sbatch --dependency=afterok:$jid --array=1-10 --wrap 'bash plan.sh $SLURM_ARRAY_TASK_ID').
#    Here the pretraining and the first variant.
bash "$out/plan.sh" 0
bash "$out/plan.sh" 1

# 3. The tables, from whatever has finished (rerun it as more jobs finish).
gpv ablate --collect --study all --out "$out"

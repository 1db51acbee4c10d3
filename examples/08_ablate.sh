#!/usr/bin/env bash
# 08 · gpv ablate: the paper's ablations (Table 1: task combinations and Fig. 1; Table 2: relevance
# conditioning; Table 3: heads), every variant trained from the same pretrained encoders for the same
# epochs over its own training samples, and evaluated alike. Shown the way a cluster runs it: plan the
# jobs, run them (here the pretraining and the four-task model), collect the tables.
#
# Writes under $RUNS/ablate/:
#   plan.sh, plan.txt, settings.json    --plan: the pretraining command, then one per variant of the studies
#   pretrained/                         the shared starting point: the quickstart's backbone warm-up and
#                                       alignment stages, and the visual feature cache every variant reads
#   vqa-cap-loc-cls_rel_modality_s0/    the four-task model (Table 1 [h], Table 2 [a], Table 3 [b]): a run
#                                       folder with eval/ and result.json
#   ablation.json, ablation.md, figure1.png    --collect: the tables of the finished variants (the
#                                       others shown as pending) and the paper's findings checked
# At full size the pretraining is the quickstart's first two stages and the four-task model 1,500 steps of
# 32 samples from cached features (the other variants fewer: the same epochs over fewer samples), each
# scored on the whole test split; the README gives the measured times. On one machine `gpv ablate --study
# all` does the three steps in one go (and resumes).
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
#    Here the pretraining and the four-task model (the 8th variant).
bash "$out/plan.sh" 0
bash "$out/plan.sh" 8

# 3. The tables, from whatever has finished (rerun it as more jobs finish).
gpv ablate --collect --study all --out "$out"

# Sizes shared by the example scripts (each one sources this file). Not meant to be run by itself.
#
# The defaults are the real thing: the 2,000 + 500 image synthetic world and the quickstart's step
# counts. SMALL=1 shrinks every size to a smoke test that runs in seconds (the test suite uses it);
# any single variable below can also be set on its own, e.g.
#     GPV_EXAMPLE_STEPS=200 bash examples/03_train.sh
#
# Where things go: the world and prepared data in $GPV_HOME (default ~/.cache/gpvcli, as for every
# gpv command), runs and outputs of the examples in $GPV_EXAMPLE_RUNS (default runs/examples).

export GPV_HOME="${GPV_HOME:-$HOME/.cache/gpvcli}"
RUNS="${GPV_EXAMPLE_RUNS:-runs/examples}"

if [[ "${SMALL:-0}" == 1 ]]; then
  # 40 train2014 images is the least `gpv quickstart` accepts: 32 of them (80%) fill its alignment batch.
  : "${GPV_EXAMPLE_TRAIN_IMAGES:=40}" "${GPV_EXAMPLE_VAL_IMAGES:=4}"
  : "${GPV_EXAMPLE_CLASSIFIER_STEPS:=2}" "${GPV_EXAMPLE_DETECTOR_STEPS:=2}" "${GPV_EXAMPLE_STEPS:=3}"
  # small batches and a small validation subset: a second a step
  : "${GPV_EXAMPLE_SET:=train.batch_size=8 train.val_samples=16 train.val_batch_size=16}"
  : "${GPV_EXAMPLE_EVAL_LIMIT:=24}" "${GPV_EXAMPLE_REPORT_N:=2}"
  : "${GPV_EXAMPLE_ABLATE_BUDGET:=0.002}" "${GPV_EXAMPLE_ABLATE_EVAL_SAMPLES:=8}"
  : "${GPV_EXAMPLE_INFO_CONFIGS=}"        # no tables, only the JSON of 09_info
  : "${GPV_EXAMPLE_QUICKSTART_BUDGET:=0.002}"
fi

TRAIN_IMAGES="${GPV_EXAMPLE_TRAIN_IMAGES:-2000}"       # images in the synthetic train2014
VAL_IMAGES="${GPV_EXAMPLE_VAL_IMAGES:-500}"            # images in val2014 (the COCO-SCE test split)
CLASSIFIER_STEPS="${GPV_EXAMPLE_CLASSIFIER_STEPS:-200}"  # backbone warm-up steps (batch 64 in quickstart)
DETECTOR_STEPS="${GPV_EXAMPLE_DETECTOR_STEPS:-600}"    # detector pretraining steps (batch 32)
STEPS="${GPV_EXAMPLE_STEPS:-1200}"                     # GPV training steps (batch 32)
EVAL_LIMIT="${GPV_EXAMPLE_EVAL_LIMIT:-0}"              # test samples scored by 04_evaluate (0 = all)
REPORT_N="${GPV_EXAMPLE_REPORT_N:-10}"                 # images in the HTML report
ABLATE_BUDGET="${GPV_EXAMPLE_ABLATE_BUDGET:-1}"        # 1 = 1,500 steps of the four-task model (tiny preset)
ABLATE_EVAL_SAMPLES="${GPV_EXAMPLE_ABLATE_EVAL_SAMPLES:-0}"   # test samples scored per task and variant (0: all)
INFO_CONFIGS="${GPV_EXAMPLE_INFO_CONFIGS-tiny gpv1}"   # presets whose tables 09_info prints
QUICKSTART_BUDGET="${GPV_EXAMPLE_QUICKSTART_BUDGET:-1}"  # 1 = 200 warm-up + 600 alignment + 2,400 GPV steps

# Extra `--set section.key=value` overrides for every training (space-separated in GPV_EXAMPLE_SET),
# used unquoted as $SETS: "--set train.batch_size=8 --set ...".
SETS=""
for s in ${GPV_EXAMPLE_SET:-}; do SETS="$SETS --set $s"; done

mkdir -p "$RUNS"

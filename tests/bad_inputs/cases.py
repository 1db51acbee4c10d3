"""The bad-input corpus: what a user can hand each `gpv` command, and what must come back.

One `Case` per input. Its command line (after `gpv`) may name:
    {input}  the path its generator (a function of make.py, run at test time) returned
    {ckpt}   the shared 2-step run's best/ checkpoint     {run}   that run folder
    {data}   the shared prepared COCO-SCE data            {image} a valid JPEG of the shared world
and runs in an empty case folder (the current directory; GPV_HOME inside it).

Expected outcome:
    exit 2  bad usage or input; exit 1  a failure of the run itself (none here: every case below is the
            user's input); both print exactly one stderr line "error: <problem> (<what to do>)" holding
            every string of `says`, no traceback, and leave every file as it was (nothing new or
            half-written, in the case folder or in the shared fixture).
    exit 0  a valid input, however unusual, that must work; it may create only the files matching
            `writes` (globs relative to the case folder), and `after` (a function of make.py) checks
            the result further.
"""

from __future__ import annotations

from dataclasses import dataclass

from conftest import FAST_TRAIN

# 10,047 characters
LONG_PROMPT = ("What colour is the small dog next to the red bench in the park? " * 157).strip()


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    exit: int
    says: tuple[str, ...] = ()
    make: str | None = None
    writes: tuple[str, ...] = ()
    after: str | None = None
    note: str = ""


def sets(*overrides: str) -> tuple[str, ...]:
    return tuple(a for o in (*FAST_TRAIN, *overrides) for a in ("--set", o))


def predict(image: str = "{input}", text: str = "What is this?", *extra: str, ckpt: str = "{ckpt}",
            out: str = "out.jpg") -> tuple[str, ...]:
    return ("predict", image, text, "--checkpoint", ckpt, "--out", out, *extra)


def prepare(*extra: str) -> tuple[str, ...]:
    return ("prepare", "--split", "sce", "--coco-dir", "{input}", "--out", "out", *extra)


BAD_RECORD = "fix or remove it"
READ = "give a JPEG or PNG file"
RESUME = ("train", "--resume", "--run", "{input}", "--data", "{data}")

CASES = [
    # ---- images for `gpv predict` ----
    Case("predict-missing-image", predict("missing.jpg"), 2,
         ("image not found: missing.jpg", "check the path"), note="checked before the model loads"),
    Case("predict-empty-jpeg", predict(), 2, ("cannot read image", READ), make="empty_jpeg"),
    Case("predict-truncated-jpeg", predict(), 2, ("image file is truncated", READ), make="truncated_jpeg"),
    Case("predict-corrupt-jpeg", predict(), 2, ("cannot read image", READ), make="corrupt_jpeg"),
    Case("predict-decompression-bomb", predict(), 2, ("too large to decode safely", "resize it"),
         make="bomb_png", note="a 48 KB PNG of 20000x20000 pixels: refused from its header, never decoded"),
    Case("predict-cmyk-jpeg", predict(), 0, make="cmyk_jpeg", writes=("out.jpg",),
         note="valid: converted to RGB"),
    Case("predict-16-bit-png", predict(), 0, make="gray16_png", writes=("out.jpg",),
         note="valid: scaled 0..65535 -> 0..255 (PIL's own conversion clips it to white)"),
    Case("predict-palette-png", predict(), 0, make="palette_png", writes=("out.jpg",),
         note="valid: palette with a transparent colour, composited on white"),
    Case("predict-folder-without-images", predict(out="drawn"), 2, ("no images in", "give a folder of"),
         make="no_images_folder"),
    # ---- batch mode: a JSONL of {"image", "text"} ----
    Case("predict-jsonl-missing", predict("pairs.jsonl", out="drawn"), 2,
         ("JSONL file not found", "check the path")),
    Case("predict-jsonl-unicode", predict(out="drawn"), 0, make="jsonl_valid_unicode", writes=("drawn/*",),
         note="valid: UTF-8 text with accents"),
    Case("predict-jsonl-not-utf8", predict(out="drawn"), 2, ("is not UTF-8 text", "save it as UTF-8"),
         make="jsonl_latin1"),
    Case("predict-jsonl-truncated", predict(out="drawn"), 2, ("line 2 is not a JSON object", "per line"),
         make="jsonl_truncated"),
    Case("predict-jsonl-without-image-field", predict(out="drawn"), 2,
         ("line 1 is not a JSON object", "per line"), make="jsonl_without_image_field"),
    Case("predict-jsonl-missing-image", predict(out="drawn"), 2,
         ("image not found", "gone.jpg", "check the path"), make="jsonl_missing_image",
         note="every image is checked before the first is drawn"),
    # ---- prompts and options ----
    Case("predict-empty-prompt", predict("{image}", ""), 2, ("the task text is empty", "say what to do")),
    Case("predict-blank-prompt", predict("{image}", "   "), 2, ("the task text is empty", "say what to do")),
    Case("predict-10000-character-prompt", predict("{image}", LONG_PROMPT), 2,
         ("10,047 characters", "longer than the 64 tokens", "shorten it"),
         note="refused rather than silently cut to its first 64 tokens"),
    Case("predict-negative-top-k", predict("{image}", "Locate dog.", "--top-k", "-1"), 2,
         ("the top-k must be 0 or more", "--top-k 5")),
    Case("predict-zero-beam", predict("{image}", "What is this?", "--beam", "0"), 2,
         ("the beam size 1 or more", "--beam 1")),
    Case("predict-unknown-task", predict("{image}", "Dance.", "--task", "dance"), 2,
         ("unknown task 'dance'", "tasks: vqa")),
    # ---- checkpoints, runs, feature caches ----
    Case("predict-checkpoint-from-another-config", predict("{image}", ckpt="{input}"), 2,
         ("do not fit model_config.yaml", "tensors of another shape", "use the folder as it was saved"),
         make="ckpt_other_config"),
    Case("predict-missing-checkpoint", predict("{image}", ckpt="nowhere"), 2,
         ("no run or checkpoint at nowhere", "give a run folder")),
    Case("evaluate-pickle-posing-as-checkpoint",
         ("evaluate", "{input}", "--data", "{data}", "--out", "ev"), 2,
         ("model.safetensors is unreadable or corrupt", "as `gpv train` saved it"),
         make="ckpt_pickled_weights", note="never unpickled: safetensors holds no code"),
    Case("evaluate-missing-run", ("evaluate", "nowhere", "--out", "ev"), 2,
         ("no run or checkpoint at nowhere", "give a run folder")),
    Case("evaluate-truncated-prepared-split", ("evaluate", "{ckpt}", "--data", "{input}", "--out", "ev"), 2,
         ("is not a readable HDF5 file", "rerun `gpv prepare`"), make="data_truncated_test_split"),
    Case("train-resume-pickled-trainer-state", RESUME, 2,
         ("trainer.pt is not this run's trainer state (UnpicklingError", "restore the folder as saved"),
         make="run_pickled_trainer_state",
         note="trainer.pt is read with weights_only=True: the foreign object is refused, never built"),
    Case("train-resume-checkpoint-from-another-config", RESUME, 2,
         ("cannot resume from", "its weights do not load", "size mismatch", "restore the folder as saved"),
         make="run_other_config"),
    Case("train-pretrained-missing-folder",
         ("train", "--data", "{data}", "--run", "r", *sets("model.visual.pretrained=/no/such/folder")), 2,
         ("model.visual.pretrained=/no/such/folder: no such folder", "give an existing folder or a hub name")),
    Case("train-pretrained-missing-tensor",
         ("train", "--data", "{data}", "--run", "r", *sets("model.visual.pretrained={input}")), 2,
         ("does not fit the model: 1 tensor missing from the checkpoint",
          "(detr.backbone.model.encoder.stages.1.layers.0.layer.0.convolution.weight)", "set model.visual's sizes"),
         make="visual_missing_tensor", note="only the class head and the other kind of queries may start fresh"),
    Case("info-pretrained-missing-folder", ("info", "--set", "model.text.pretrained=/no/such/folder"), 2,
         ("model.text.pretrained=/no/such/folder: no such folder", "give an existing folder or a hub name")),
    Case("train-feature-cache-from-another-model",
         ("train", "--run", "{input}", "--data", "{data}", "--tasks", "vqa",
          *sets("train.frozen_visual_epochs=1", "train.max_steps=1")), 0,
         make="run_foreign_feature_cache", writes=("run/*",), after="feature_cache_rebuilt",
         note="valid: a cache whose fingerprint is another encoder's is rebuilt, never read"),
    Case("report-truncated-run-record", ("report", "{input}", "--out", "r.html"), 2,
         ("run record", "is not valid JSON", "regenerate or replace the file"), make="run_truncated_record"),
    Case("report-zero-images", ("report", "{run}", "--n", "0", "--out", "r.html"), 2,
         ("--n must be at least 1",)),
    # ---- configs ----
    Case("train-config-file-unknown-key",
         ("train", "--config", "{input}", "--data", "{data}", "--run", "r"), 2,
         ("unknown config key train.lrr", "known keys here"), make="config_unknown_key"),
    Case("train-set-wrong-type", ("train", "--data", "{data}", "--run", "r", "--set", "train.lr=fast"), 2,
         ("config train.lr: expected a number, got 'fast'",)),
    Case("info-set-unknown-key", ("info", "--set", "model.hiden=3"), 2,
         ("unknown config key model.hiden", "known keys here")),
    Case("info-config-not-utf8", ("info", "--config", "{input}"), 2,
         ("is not UTF-8 text", "save it as UTF-8"), make="config_latin1"),
    Case("info-config-malformed-yaml", ("info", "--config", "{input}"), 2,
         ("is not valid YAML", "fix the line"), make="config_malformed",
         note="YAML's own message spans lines; it is printed as one"),
    Case("info-vocab-size-too-small", ("info", "--vocab-size", "2"), 2,
         ("--vocab-size 2 is too small", "at least 5")),
    # ---- COCO / VQA files for `gpv prepare` ----
    Case("prepare-missing-file", prepare(), 2, ("missing", "captions_val2014.json", "download it from"),
         make="coco_missing_captions"),
    Case("prepare-truncated-json", prepare(), 2, ("instances_train2014.json is not valid JSON", "regenerate"),
         make="coco_truncated_instances"),
    Case("prepare-json-not-utf8", prepare(), 2,
         ("captions_train2014.json is not valid JSON", "codec can't decode", "regenerate"),
         make="coco_latin1_captions"),
    Case("prepare-missing-key", prepare(), 2, ("has no 'annotations' field", "is it the right file"),
         make="coco_no_annotations_key"),
    Case("prepare-annotation-without-bbox", prepare(), 2, ("annotation 10 has no 'bbox' field", BAD_RECORD),
         make="coco_annotation_without_bbox"),
    Case("prepare-bbox-wrong-type", prepare(), 2,
         ("annotation 10 has 'bbox': '0,5,20,10', not a list", BAD_RECORD), make="coco_bbox_string"),
    Case("prepare-image-id-wrong-type", prepare(), 2, ("image 1 has 'id': '1', not an integer", BAD_RECORD),
         make="coco_image_id_string"),
    Case("prepare-negative-box", prepare(), 2,
         ("annotation 10 has a box of negative size", "[x, y, w, h]", BAD_RECORD), make="coco_negative_box"),
    Case("prepare-zero-size-box", prepare(), 0, make="coco_zero_size_box", writes=("out/*",),
         note="valid: COCO 2014 has such boxes (e.g. annotation 2206849, height 0); kept as they are"),
    Case("prepare-box-outside-image", prepare(), 2,
         ("annotation 10 has box", "wholly outside its 100x80 image", BAD_RECORD),
         make="coco_box_outside_image"),
    Case("prepare-box-partly-outside-image", prepare(), 0, make="coco_box_partly_outside", writes=("out/*",),
         note="valid: clipped to the image where it is used"),
    Case("prepare-unknown-category-id", prepare(), 2,
         ("annotation 10 has unknown category id 999", BAD_RECORD), make="coco_unknown_category"),
    Case("prepare-duplicate-image-ids", prepare(), 2, ("image 1 appears twice", BAD_RECORD),
         make="coco_duplicate_image_ids"),
    Case("prepare-duplicate-annotation-ids", prepare(), 2, ("annotation 10 appears twice", BAD_RECORD),
         make="coco_duplicate_annotation_ids"),
    Case("prepare-caption-of-unknown-image", prepare(), 2, ("caption 1001 refers to image 999", BAD_RECORD),
         make="coco_caption_of_unknown_image"),
    Case("prepare-vqa-without-10-answers", prepare(), 2, ("VQA annotation 2001 has 3 answers", BAD_RECORD),
         make="coco_vqa_three_answers"),
    Case("prepare-split-file-wrong-types",
         ("prepare", "--coco-dir", "coco", "--out", "out", "--image-split-file", "{input}"), 2,
         ("must be a JSON object with 'train' and 'val' lists of image ids", "e.g."),
         make="split_file_wrong_types"),
    # ---- ablate, synth ----
    Case("ablate-unknown-task", ("ablate", "--tasks", "vqa,dance", "--data", "{data}", "--out", "ab"), 2,
         ("unknown task dance", "choose from")),
    Case("ablate-negative-budget",
         ("ablate", "--tasks", "vqa", "--data", "{data}", "--out", "ab", "--budget", "-1"), 2,
         ("--budget -1.0: need a positive number",)),
    Case("ablate-truncated-result", ("ablate", "--collect", "--out", "{input}"), 2,
         ("variant result", "is not valid JSON", "regenerate"), make="ablation_truncated_result"),
    Case("synth-no-images", ("synth", "world", "--train-images", "0"), 2, ("needs 1 to",)),
    Case("synth-image-size-not-wxh", ("synth", "world", "--image-size", "640*480"), 2,
         ("--image-size '640*480' is not WxH", "e.g. --image-size 640x480")),
    Case("synth-into-a-foreign-folder", ("synth", "{input}", "--train-images", "2", "--val-images", "1"), 2,
         ("exists and is not a synthetic world", "give an empty or new folder"), make="folder_with_a_file"),
]

"""`gpv info`: parameters per component, FLOPs and activations of a model preset."""

from __future__ import annotations

import json

import typer

from gpvcli.cli.common import config_option, console, json_option, print_table, set_option


def _millions(n: float) -> str:
    return f"{n / 1e6:,.1f}M"


def info_command(
    config: str = config_option(),
    vocab_size: int = typer.Option(7600, "--vocab-size", help="Answer vocabulary size of the placeholder "
                                   "vocabulary (GPV-1 had about 7.6k words)."),
    overrides: list[str] = set_option(),
    as_json: bool = json_option("the figures as JSON"),
) -> None:
    """Parameters (trainable / frozen per component), FLOPs and activations of one forward pass.

    The feature cache of the frozen-visual stage is sized for the preset's train.cache_form and
    train.cache_max_gb: bytes per sample (an image or a classification crop) and the projected size for
    COCO-SCE train (66,226 images, 174,538 crops), with how many entries the bound leaves live.

    FLOPs and activations are measured on one sample at the preset's image size with a
    16-token query and a 5-token answer; FLOPs count 2 per multiply-add (torch FlopCounterMode),
    activations the output elements of every leaf module. The paper's GPV-1 figures are
    shown beside them. A named model.visual.pretrained / model.text.pretrained is checked
    first: a folder must exist and fit the config; a hub name is looked up in the local
    cache (never downloaded here).

    Example: gpv info --config gpv1 --set model.heads=task
    """
    from gpvcli.errors import GPVError
    from gpvcli.model.feature_cache import FORMS, projected_size
    from gpvcli.model.info import PAPER, model_info
    from gpvcli.model.pretrained import check_named
    from gpvcli.train.config import load_run_config

    if vocab_size < 5:
        raise GPVError(f"--vocab-size {vocab_size} is too small", hint="at least 5 (4 special tokens + 1 word)")
    run_cfg = load_run_config(config, overrides)
    cfg, t = run_cfg.model, run_cfg.train
    found = check_named(cfg, download=False)
    info = model_info(cfg, vocab_size)
    cache = {form: projected_size(**info["visual_outputs"], form=form, max_gb=t.cache_max_gb if form == t.cache_form
                                  else 0.0) for form in FORMS}
    info["feature_cache"] = {"form": t.cache_form, "max_gb": t.cache_max_gb, "coco_sce_train": cache}
    if as_json:
        print(json.dumps({**info, "pretrained": found}, indent=2))
        return
    params = info["parameters"]
    rows = [[name, _millions(c["trainable"]), _millions(c["frozen"]), _millions(c["trainable"] + c["frozen"])]
            for name, c in params.items()]
    H, W = info["image_size"]
    print_table(f"Parameters of {config} (answer vocabulary {vocab_size} words)",
                ["trainable", "frozen", "total"], rows, first_column="Component")
    total = params["total"]["trainable"] + params["total"]["frozen"]
    print_table(f"One forward pass: {H}x{W} image, {info['query_len']}-token query, "
                f"{info['answer_len']}-token answer", ["this model", "paper (GPV-1)"],
                [["parameters", _millions(total), _millions(PAPER["parameters"][cfg.heads])],
                 ["FLOPs", f"{info['flops'] / 1e9:,.2f}G", f"{PAPER['flops'] / 1e9:.0f}G"],
                 ["activations", _millions(info["activations"]), _millions(PAPER["activations"])]],
                first_column="Figure")
    console.print("The paper's figures are for the gpv1 preset at 480x640 (head per task: 311M parameters).")
    rows = [[f"{form}{' (this config)' if form == t.cache_form else ''}", f"{c['bytes_per_sample'] / 1e3:,.1f} kB",
             f"{c['bytes'] / 1e9:,.1f} GB", f"{c['cached_bytes'] / 1e9:,.1f} GB", f"{c['live']:,}"]
            for form, c in cache.items()]
    bound = f"within train.cache_max_gb={t.cache_max_gb:g}" if t.cache_max_gb else "no size bound"
    print_table(f"Feature cache of the frozen-visual stage on COCO-SCE train ({cache[t.cache_form]['entries']:,} "
                f"images and crops; {bound})", ["per sample", "all cached", "cached", "computed live"], rows,
                first_column="Form")
    for kind in ("visual", "text"):
        console.print(f"pretrained {kind}: {found.get(kind, 'none (random init)')}", highlight=False)

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

    FLOPs and activations are measured on one sample at the preset's image size with a
    16-token query and a 5-token answer; FLOPs count 2 per multiply-add (torch FlopCounterMode),
    activations the output elements of every leaf module. The paper's GPV-1 figures are
    shown beside them. A named model.visual.pretrained / model.text.pretrained is checked
    first: a folder must exist and fit the config; a hub name is looked up in the local
    cache (never downloaded here).

    Example: gpv info --config gpv1 --set model.heads=task
    """
    from gpvcli.errors import GPVError
    from gpvcli.model.config import load_model_config
    from gpvcli.model.info import PAPER, model_info
    from gpvcli.model.pretrained import check_named

    if vocab_size < 5:
        raise GPVError(f"--vocab-size {vocab_size} is too small", hint="at least 5 (4 special tokens + 1 word)")
    cfg = load_model_config(config, overrides)
    found = check_named(cfg, download=False)
    info = model_info(cfg, vocab_size)
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
    for kind in ("visual", "text"):
        console.print(f"pretrained {kind}: {found.get(kind, 'none (random init)')}", highlight=False)

"""Pretrained checkpoints: where a `pretrained` name points, reading its tensors, and the load report.

A `pretrained` value (`model.visual.pretrained`, `model.text.pretrained`) is a local folder or a Hugging
Face hub name with an optional revision after `@`: `bert-base-uncased`, `facebook/detr-resnet-50`,
`facebook/detr-resnet-50@no_timm`. `resolve` turns it into a local folder before a model is built:

- an existing folder is used as it is; a value that does not exist and is not a hub name
  (`/no/such/folder`, `runs/x/last`) is an error;
- a hub name is looked up in the local hub cache first, without the network, so an offline machine with
  the files cached pays no retries. When the files are not there and downloading is allowed (not with
  HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1), only the files the encoder needs are downloaded: config.json,
  the weights (safetensors, else the PyTorch .bin) and, for text, the tokenizer files. When that fails, or
  the hub cannot be reached within seconds, the error says how to download them by hand.

Tensors are read without unpickling code: safetensors, or a `.bin` through `torch.load(weights_only=True)`.

Every load is checked and reported (`LoadReport`): tensors loaded, started fresh (in the model, not taken
from the checkpoint) and ignored (in the checkpoint, not used). Each encoder names the few tensors that may
start fresh or be ignored; any other missing, unexpected or reshaped tensor stops the run (`check_load`).

DETR checkpoints: transformers' DETR has been published in two layouts, both read here into our names
(`detr_tensor_name`). The default revision of facebook/detr-resnet-50 (`use_timm_backbone: true`) stores
the backbone with timm's (= torchvision's) ResNet names, `model.backbone.conv_encoder.model.layer1.0.conv1
.weight`; its `no_timm` revision stores transformers' ResNet names,
`model.backbone.conv_encoder.model.encoder.stages.0.layers.0.layer.0.convolution.weight`. Both were
written by transformers 4, whose transformer layers were named `out_proj` and `fc1`/`fc2` where
transformers 5 has `o_proj` and `mlp.fc1`/`mlp.fc2`; a checkpoint saved by transformers 5 has the new names.
"""

from __future__ import annotations

import json
import os
import re
import socket
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from gpvcli.errors import GPVError, brief

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN)
# the files AutoTokenizer reads from a BERT repository (any that exist)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
# a hub repository id: NAME or OWNER/NAME (letters, digits, '-', '_', '.')
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
HUB_TIMEOUT = 5.0  # seconds to reach the hub before a download is given up


class NotCached(GPVError):
    """A hub name whose files are not in the local cache (raised when downloading is not allowed)."""


def split_revision(spec: str) -> tuple[str, str | None]:
    """`NAME@REVISION` -> (NAME, REVISION); a name without `@` -> (name, None)."""
    name, _, revision = spec.partition("@")
    return name, revision or None


def _download_hint(name: str, revision: str | None, setting: str) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (f"download it once: hf download {name}{rev} --local-dir DIR (huggingface-cli download on "
            f"huggingface_hub < 1.0), then --set {setting}=DIR")


def _offline() -> bool:
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable() -> bool:
    """Whether the hub's host answers within HUB_TIMEOUT (always True behind a proxy, which is not probed)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=HUB_TIMEOUT).close()
    except OSError:
        return False
    return True


def _complete(folder: Path) -> bool:
    """Whether `folder` holds a transformers checkpoint: config.json and weights."""
    return (folder / CONFIG).is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def _from_hub(spec: str, setting: str, optional: tuple[str, ...], download: bool) -> Path:
    from huggingface_hub import snapshot_download

    name, revision = split_revision(spec)
    hint = _download_hint(name, revision, setting)
    try:
        folder = Path(snapshot_download(name, revision=revision, local_files_only=True))
    except (OSError, ValueError):  # not in the cache (or a cache entry without this revision)
        folder = None
    if folder is not None and _complete(folder):
        return folder
    absent = f"{setting}={spec} is not a folder here and not in the local Hugging Face cache"
    if not download:
        raise NotCached(absent, hint=hint)
    if _offline():
        raise GPVError(f"{absent}, and HF_HUB_OFFLINE is set", hint=hint)
    if not _hub_reachable():
        raise GPVError(f"{absent}, and the hub cannot be reached", hint=hint)
    files = (CONFIG, *optional)
    try:
        folder = Path(snapshot_download(name, revision=revision, allow_patterns=[
            *files, SAFETENSORS, SAFETENSORS_INDEX, "model-*-of-*.safetensors"]))
        if not _complete(folder):  # no safetensors in this repository: the PyTorch weights
            folder = Path(snapshot_download(name, revision=revision, allow_patterns=[*files, TORCH_BIN]))
    except Exception as e:
        raise GPVError(f"cannot download {setting}={spec} ({brief(e)})", hint=hint) from e
    if not _complete(folder):
        raise GPVError(f"{setting}={spec}: the repository has no {CONFIG} and weights ({' or '.join(WEIGHT_FILES)})",
                       hint="name a transformers checkpoint")
    return folder


def resolve(spec: str, setting: str, *, own_files: tuple[str, ...] = (), optional: tuple[str, ...] = (),
            download: bool = True) -> Path:
    """The local folder of `spec` (see the module doc); `setting` names the config field in messages.

    A local folder must hold one of `own_files` (a gpvcli format) or config.json and weights, a hub
    snapshot config.json and weights; `optional` files (a tokenizer's) are downloaded with them when the
    repository has them. download=False: a hub name that is not cached raises NotCached.
    """
    folder = Path(spec).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise GPVError(f"{setting}={spec} is a file, not a checkpoint folder")
        if not any((folder / f).is_file() for f in own_files) and not _complete(folder):
            expected = " or ".join([*own_files, f"{CONFIG} + {' or '.join(WEIGHT_FILES)}"])
            raise GPVError(f"{setting}={spec} holds no checkpoint (no {expected})",
                           hint="name the folder a checkpoint was saved in")
        return folder
    if not _HUB_NAME.match(split_revision(spec)[0]):
        raise GPVError(f"{setting}={spec}: no such folder", hint="give an existing folder or a hub name")
    return _from_hub(spec, setting, optional, download)


def read_config(folder: Path) -> dict:
    """config.json of a checkpoint folder as a dict."""
    try:
        data = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise GPVError(f"cannot read {folder / CONFIG} ({brief(e)})")
    if not isinstance(data, dict):
        raise GPVError(f"{folder / CONFIG} is not a JSON object")
    return data


def read_tensors(folder: Path) -> dict[str, Tensor]:
    """Every tensor of a transformers checkpoint folder: model.safetensors, its shards (listed in
    model.safetensors.index.json), or pytorch_model.bin read with weights_only=True (no code runs)."""
    try:
        if (folder / SAFETENSORS).is_file():
            return load_file(folder / SAFETENSORS)
        if (folder / SAFETENSORS_INDEX).is_file():
            shards = sorted(set(json.loads((folder / SAFETENSORS_INDEX).read_text())["weight_map"].values()))
            return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on the pickle protocol of a foreign file
            state = torch.load(folder / TORCH_BIN, map_location="cpu", weights_only=True)
    except Exception as e:
        raise GPVError(f"cannot read the weights in {folder} ({brief(e)})",
                       hint="only tensors are read from a checkpoint (safetensors, or a .bin of plain tensors)") from e
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise GPVError(f"{folder / TORCH_BIN} is not a state dict of tensors")
    return state


# ---- the load report ----------------------------------------------------------------------------

@dataclass
class LoadReport:
    """What building one encoder took from its checkpoint.

    kind: "visual" or "text". source: the `pretrained` value (None: nothing named, everything random).
    folder: where its files were read. loaded: the number of tensors copied from the checkpoint.
    started_fresh: the model's tensors left at their initialization. ignored: checkpoint tensors not used.
    """

    kind: str
    source: str | None
    folder: str | None
    loaded: int
    started_fresh: list[str]
    ignored: list[str]

    @classmethod
    def random_init(cls, kind: str, module: nn.Module) -> LoadReport:
        return cls(kind, None, None, 0, tensor_names(module.state_dict()), [])

    def line(self) -> str:
        if self.source is None:
            return f"{self.kind} random init ({len(self.started_fresh)} tensors, no pretrained named)"
        return (f"{self.kind} {self.source}: {self.loaded} tensors loaded, {len(self.started_fresh)} started fresh"
                f"{_few(self.started_fresh)}, {len(self.ignored)} ignored{_few(self.ignored)}")

    def as_dict(self) -> dict:
        return asdict(self)


def _few(names: list[str], n: int = 3) -> str:
    if not names:
        return ""
    more = f", +{len(names) - n} more" if len(names) > n else ""
    return f" ({', '.join(names[:n])}{more})"


def tensor_names(state: dict) -> list[str]:
    """State-dict names that count as tensors of a model (BatchNorm's step counters do not)."""
    return [k for k in state if not k.endswith("num_batches_tracked")]


def check_load(*, setting: str, spec: str, missing: Iterable[str], unexpected: Iterable[str],
               reshaped: dict[str, tuple[tuple, tuple]], may_start_fresh: Callable[[str], bool],
               may_ignore: Callable[[str], bool], hint: str) -> None:
    """Raise GPVError naming the first few tensors that are missing (and may not start fresh), unexpected
    (and may not be ignored) or of another shape (`reshaped`: name -> (checkpoint shape, model shape);
    those that may start fresh are allowed)."""
    parts = []
    bad_missing = [n for n in missing if not may_start_fresh(n)]
    bad_unexpected = [n for n in unexpected if not may_ignore(n)]
    bad_shapes = [f"{n} {list(a)} in the checkpoint, {list(b)} in the model" for n, (a, b) in reshaped.items()
                  if not may_start_fresh(n)]
    for names, what in ((bad_missing, "missing from the checkpoint"), (bad_unexpected, "unexpected"),
                        (bad_shapes, "of another shape")):
        if names:
            parts.append(f"{len(names)} tensor{'s' * (len(names) > 1)} {what}{_few(names)}")
    if parts:
        raise GPVError(f"{setting}={spec} does not fit the model: {'; '.join(parts)}", hint=hint)


def load_reports(model: nn.Module) -> dict[str, LoadReport]:
    """The LoadReport of every encoder inside `model` (its `load_report` attribute), by kind."""
    return {r.kind: r for m in model.modules() if isinstance(r := getattr(m, "load_report", None), LoadReport)}


def reports_line(reports: dict[str, LoadReport]) -> str:
    """One line for a run's log: `weights: visual ...; text ...`."""
    return "weights: " + "; ".join(r.line() for r in reports.values())


def check_named(model_cfg, *, download: bool = True, kinds: tuple[str, ...] = ("visual", "text")) -> dict[str, str]:
    """Check `model.visual.pretrained` and `model.text.pretrained` of a ModelConfig (those of `kinds`) before
    anything else: resolve each named checkpoint (downloading with `download`) and compare its config.json
    with the model config. Returns {kind: what was found}; a hub name not cached is reported, not raised,
    when download=False. Raises GPVError for a missing folder or a checkpoint that does not fit."""
    from gpvcli.model.text import text_folder
    from gpvcli.model.visual import visual_folder

    found = {}
    for kind, cfg, locate in (("visual", model_cfg.visual, visual_folder), ("text", model_cfg.text, text_folder)):
        if cfg.pretrained is None or kind not in kinds:
            continue
        try:
            found[kind] = f"{cfg.pretrained} ({locate(cfg, download=download)})"
        except NotCached as e:
            found[kind] = f"{cfg.pretrained}: not downloaded yet; `gpv train` downloads it, or {e.hint}"
    return found


# ---- DETR checkpoint names ----------------------------------------------------------------------

# transformers' DetrForObjectDetection prefixes -> ours (gpvcli.model.visual.VisualEncoder)
_DETR_PREFIXES = {"model.": "detr.", "class_labels_classifier.": "class_head.", "bbox_predictor.": "box_head."}
# transformers 4 module names -> transformers 5 ones, inside the DETR transformer
_DETR_RENAMES = ((re.compile(r"\.out_proj\."), ".o_proj."), (re.compile(r"\.layers\.(\d+)\.(fc[12])\."), r".layers.\1.mlp.\2."))
_TIMM_STEM = {"conv1": "embedder.embedder.convolution", "bn1": "embedder.embedder.normalization"}
_TIMM_BLOCK = re.compile(r"^layer(?P<stage>[1-4])\.(?P<block>\d+)\.(?:(?P<kind>conv|bn)(?P<k>\d)|downsample\.(?P<d>[01]))\.")


def timm_resnet_name(name: str) -> str | None:
    """transformers' ResNet name of a timm (= torchvision) ResNet tensor name, both relative to the
    backbone; None for a name that is not one of a ResNet's convolutions or batch norms.

    conv1 / bn1 (the stem) -> embedder.embedder.convolution / .normalization;
    layerS.B.convK / bnK -> encoder.stages.(S-1).layers.B.layer.(K-1).convolution / .normalization;
    layerS.B.downsample.0 / .1 -> encoder.stages.(S-1).layers.B.shortcut.convolution / .normalization.
    """
    head, _, leaf = name.partition(".")
    if head in _TIMM_STEM and leaf:
        return f"{_TIMM_STEM[head]}.{leaf}"
    m = _TIMM_BLOCK.match(name)
    if not m:
        return None
    block = f"encoder.stages.{int(m['stage']) - 1}.layers.{m['block']}"
    if m["d"] is not None:
        part = f"shortcut.{'convolution' if m['d'] == '0' else 'normalization'}"
    else:
        part = f"layer.{int(m['k']) - 1}.{'convolution' if m['kind'] == 'conv' else 'normalization'}"
    return f"{block}.{part}.{name[m.end():]}"


def detr_tensor_name(name: str) -> str:
    """Our VisualEncoder name of a transformers DetrForObjectDetection tensor name, in either published
    backbone layout and with transformers 4 or 5 module names; a name it does not know comes back as is."""
    prefix = next((p for p in _DETR_PREFIXES if name.startswith(p)), None)
    if prefix is None:
        return name
    rest = name[len(prefix):]
    if prefix == "model.":
        if rest.startswith("backbone.conv_encoder."):  # transformers 4's name of the backbone wrapper
            rest = "backbone." + rest[len("backbone.conv_encoder."):]
        if rest.startswith("backbone.model."):
            inner = rest[len("backbone.model."):]
            if not inner.startswith(("embedder.", "encoder.")):
                inner = timm_resnet_name(inner) or inner
            rest = "backbone.model." + inner
        else:
            for pattern, new in _DETR_RENAMES:
                rest = pattern.sub(new, "." + rest)[1:]
    return _DETR_PREFIXES[prefix] + rest


# DetrConfig keys -> VisualConfig fields that must be equal; the tensors' shapes check the other sizes
_DETR_SIZES = {"d_model": "d_model", "encoder_layers": "encoder_layers", "decoder_layers": "decoder_layers",
               "encoder_attention_heads": "attention_heads", "decoder_attention_heads": "attention_heads",
               "encoder_ffn_dim": "ffn_dim", "decoder_ffn_dim": "ffn_dim"}


def check_detr_config(config: dict, cfg, setting: str, spec: str) -> None:
    """Refuse a DETR config.json that the VisualConfig `cfg` cannot reproduce: other transformer sizes or
    attention heads (the heads leave no trace in tensor shapes), a learned position embedding, a dilated
    backbone, another activation."""
    for key, ours in _DETR_SIZES.items():
        if key in config and config[key] != getattr(cfg, ours):
            raise GPVError(f"{setting}={spec} has {key}={config[key]} but model.visual.{ours}={getattr(cfg, ours)}",
                           hint=f"add --set model.visual.{ours}={config[key]}")
    for key, value in (("position_embedding_type", "sine"), ("dilation", False), ("activation_function", "relu")):
        if config.get(key, value) not in (value, None):
            raise GPVError(f"{setting}={spec} has {key}={config[key]!r}; gpvcli's DETR has {value!r}")

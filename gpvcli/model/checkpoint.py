"""Model checkpoints: a folder that rebuilds its own model, without the network.

Layout of a checkpoint folder (written atomically: it appears complete or not at all):
    model.safetensors   the state dict (safetensors; frozen BERT and word tables included)
    model_config.yaml   the full ModelConfig (gpvcli.config.to_dict)
    vocab.json          the answer vocabulary (gpvcli.data.vocab.Vocab)
    tokenizer/          the query tokenizer (save_pretrained)
Loading rebuilds the model from model_config.yaml with pretrained names switched
off (every weight comes from model.safetensors) and loads the weights strictly.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as load_safetensors
from safetensors.torch import save_model as save_safetensors
from transformers import AutoTokenizer

from gpvcli import io
from gpvcli.config import from_dict, to_dict
from gpvcli.data.vocab import Vocab
from gpvcli.errors import GPVError
from gpvcli.model.config import ModelConfig, without_pretrained
from gpvcli.model.gpv import GPV, build_model

WEIGHTS = "model.safetensors"
CONFIG = "model_config.yaml"
VOCAB = "vocab.json"
TOKENIZER = "tokenizer"
AS_SAVED = "give a checkpoint folder as `gpv train` saved it (a run's best/ or last/)"


def save_model(folder: str | Path, model: GPV, cfg: ModelConfig, vocab: Vocab, tokenizer) -> Path:
    """Write the checkpoint folder (see the module docstring); replaces an existing one."""
    folder = Path(folder)
    with io.atomic_dir(folder) as tmp:
        save_safetensors(model, str(tmp / WEIGHTS))  # shared tensors are stored once
        (tmp / CONFIG).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        vocab.save(tmp / VOCAB, min_count=0)
        tokenizer.save_pretrained(str(tmp / TOKENIZER))
    return folder


def _mismatch(model: GPV, path: Path) -> str:
    """A one-line account of how the tensors in `path` differ from the model's."""
    with safe_open(str(path), framework="pt") as f:
        names = f.keys()  # a safe_open handle is not iterable
        stored = {k: list(f.get_slice(k).get_shape()) for k in names}
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(own) - set(stored)), sorted(set(stored) - set(own))
    shapes = [k for k in sorted(set(own) & set(stored)) if own[k] != stored[k]]
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} tensors of another shape, e.g. {k}: saved {stored[k]}, config {own[k]}")
    if missing:
        parts.append(f"{len(missing)} tensors missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    return "; ".join(parts) or "tensors differ"


def load_model(folder: str | Path, device: str = "cpu") -> tuple[GPV, ModelConfig, Vocab, object]:
    """(model in eval mode on `device`, cfg, vocab, tokenizer) of a checkpoint folder.

    A missing file, a corrupt weights file or weights that do not fit the config raise GPVError.
    """
    folder = Path(folder)
    for name in (WEIGHTS, CONFIG, VOCAB, TOKENIZER):
        if not (folder / name).exists():
            raise GPVError(f"{folder} is not a model checkpoint: {name} is missing", hint=AS_SAVED)
    try:
        data = yaml.safe_load((folder / CONFIG).read_text())
    except yaml.YAMLError as e:
        raise GPVError(f"{folder / CONFIG} is not valid YAML ({e})", hint=AS_SAVED)
    cfg = from_dict(ModelConfig, data if isinstance(data, dict) else {}, "model")
    try:
        vocab = Vocab.load(folder / VOCAB)
    except (KeyError, TypeError, ValueError) as e:
        raise GPVError(f"{folder / VOCAB} is not an answer vocabulary ({e})", hint=AS_SAVED)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER))
    except (OSError, ValueError) as e:
        raise GPVError(f"cannot read the tokenizer in {folder / TOKENIZER} ({e})", hint=AS_SAVED)
    model = build_model(without_pretrained(cfg), vocab)
    try:
        load_safetensors(model, str(folder / WEIGHTS), strict=True)
    except SafetensorError as e:
        raise GPVError(f"{folder / WEIGHTS} is unreadable or corrupt ({e})", hint=AS_SAVED)
    except RuntimeError:
        raise GPVError(f"the weights in {folder / WEIGHTS} do not fit {CONFIG} ({_mismatch(model, folder / WEIGHTS)})",
                       hint="the config or the weights were edited; use the folder as it was saved")
    return model.to(device).eval(), cfg, vocab, tokenizer

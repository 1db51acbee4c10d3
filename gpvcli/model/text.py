"""The text encoder (BERT, last layer, all tokens, then Linear to D), its tokenizer and word vectors.

With `text.pretrained` set (a local folder, or a hub name with an optional @revision,
resolved by gpvcli.model.pretrained) BERT and its tokenizer load with `from_pretrained`
from that folder; every BERT tensor must load (the pre-training heads `cls.*` are
ignored; only the pooler, whose output is never used, may start fresh). Otherwise
BERT is randomly initialised from the config's sizes and the tokenizer is a WordPiece
`BertTokenizerFast` built offline from `query_vocab.txt` (written by `gpv prepare`:
[PAD], [UNK], [CLS], [SEP], [MASK], then words). BERT's pooler is always frozen.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast
from transformers.utils import logging as transformers_logging

from gpvcli.errors import GPVError, brief
from gpvcli.model.pretrained import TOKENIZER_FILES, LoadReport, check_load, read_config, resolve

# TextConfig field -> BertConfig field
_SIZES = {"hidden": "hidden_size", "layers": "num_hidden_layers", "heads": "num_attention_heads",
          "intermediate": "intermediate_size", "vocab_size": "vocab_size", "max_position": "max_position_embeddings"}
SETTING = "model.text.pretrained"


def text_folder(text_cfg, *, download: bool = True) -> Path:
    """The local folder of `text_cfg.pretrained`, its config.json's sizes checked against `text_cfg`: a
    pretrained model whose sizes differ from the config's is refused, so that checkpoints rebuild it."""
    folder = resolve(text_cfg.pretrained, SETTING, optional=TOKENIZER_FILES, download=download)
    config = read_config(folder)
    for f, b in _SIZES.items():
        if b in config and config[b] != getattr(text_cfg, f):
            raise GPVError(f"{text_cfg.pretrained} has {b}={config[b]} but the config says "
                           f"model.text.{f}={getattr(text_cfg, f)}", hint=f"add --set model.text.{f}={config[b]}")
    return folder


def build_bert(text_cfg) -> tuple[BertModel, LoadReport]:
    """BERT from `text_cfg` (a `gpvcli.model.config.TextConfig`): pretrained, or random with its sizes;
    and the report of what was loaded."""
    if text_cfg.pretrained is None:
        bert = BertModel(BertConfig(**{b: getattr(text_cfg, f) for f, b in _SIZES.items()}))
        return bert, LoadReport.random_init("text", bert)
    folder = text_folder(text_cfg)
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()  # its load table and bar: the LoadReport says it in one line
    transformers_logging.disable_progress_bar()
    try:
        # mismatched sizes are reported (and refused by check_load below), not raised
        bert, info = BertModel.from_pretrained(str(folder), output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as e:
        raise GPVError(f"cannot load the text encoder {text_cfg.pretrained!r} ({brief(e)})",
                       hint="give a folder or hub name of a transformers BERT")
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
    reshaped = {m[0]: tuple(m[1:]) for m in info["mismatched_keys"]}
    check_load(setting=SETTING, spec=text_cfg.pretrained, missing=sorted(info["missing_keys"]),
               unexpected=sorted(info["unexpected_keys"]), reshaped=reshaped,
               may_start_fresh=lambda n: n.startswith("pooler.") and n not in reshaped,
               may_ignore=lambda n: n.startswith("cls.") or n.endswith("position_ids"),
               hint="name a BERT checkpoint (transformers BertModel or BertForPreTraining)")
    names = list(bert.state_dict())
    fresh = sorted(set(info["missing_keys"]) | set(reshaped))
    return bert, LoadReport("text", text_cfg.pretrained, str(folder), len(names) - len(fresh), fresh,
                            sorted(info["unexpected_keys"]))


def build_tokenizer(text_cfg, query_vocab_file: Path | None = None):
    """The query tokenizer: the pretrained one, or WordPiece over `query_vocab_file`."""
    if text_cfg.pretrained is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(text_folder(text_cfg)))
        except (OSError, ValueError) as e:
            raise GPVError(f"cannot load the tokenizer of {text_cfg.pretrained!r} ({brief(e)})")
    else:
        if query_vocab_file is None or not Path(query_vocab_file).is_file():
            raise GPVError(f"query vocabulary not found: {query_vocab_file}",
                           hint="run `gpv prepare` (it writes query_vocab.txt)")
        words = Path(query_vocab_file).read_text(encoding="utf-8").splitlines()
        # transformers 5 ignores `vocab_file=`: the vocabulary must be given as a mapping
        tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    if len(tokenizer) > text_cfg.vocab_size:
        raise GPVError(f"the query tokenizer has {len(tokenizer)} tokens but model.text.vocab_size is "
                       f"{text_cfg.vocab_size}", hint=f"add --set model.text.vocab_size={len(tokenizer)}")
    return tokenizer


class TextEncoder(nn.Module):
    """query_ids (B,T) long, query_mask (B,T) (1 = real token) -> token states (B,T,D).

    BERT's last layer, all tokens, then a Linear D_bert->D. frozen: BERT gets no
    gradients and stays in eval mode (no dropout) even when the model trains.
    """

    def __init__(self, *, bert: BertModel, dim: int, frozen: bool, load_report: LoadReport | None = None):
        super().__init__()
        self.bert = bert
        self.load_report = load_report
        self.frozen = frozen
        self.proj = nn.Linear(bert.config.hidden_size, dim)
        if frozen:
            bert.requires_grad_(False)
        if bert.pooler is not None:
            bert.pooler.requires_grad_(False)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.frozen:
            self.bert.eval()
        return self

    def forward(self, query_ids: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        if query_ids.shape[1] > self.bert.config.max_position_embeddings:
            raise ValueError(f"{query_ids.shape[1]} query tokens exceed the text encoder's "
                             f"{self.bert.config.max_position_embeddings} positions")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            states = self.bert(input_ids=query_ids, attention_mask=query_mask).last_hidden_state
        return self.proj(states)


@torch.no_grad()
def word_vectors(bert: BertModel, tokenizer, words: list[str], batch_size: int = 256) -> torch.Tensor:
    """Each word alone through BERT: the mean of its word pieces' last-layer states -> (V,E).

    Special vocabulary entries ("<pad>", "<s>", ...) are encoded as their text like any word.
    """
    was_training = bert.training
    bert.eval()
    out = []
    for i in range(0, len(words), batch_size):
        enc = tokenizer(words[i:i + batch_size], padding=True, return_special_tokens_mask=True,
                        return_tensors="pt")
        states = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        pieces = (enc["attention_mask"].bool() & ~enc["special_tokens_mask"].bool()).float()  # (N,L)
        out.append((states * pieces[..., None]).sum(1) / pieces.sum(1, keepdim=True).clamp(min=1))
    bert.train(was_training)
    return torch.cat(out)

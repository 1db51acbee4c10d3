"""Diagnostics of a GPV run trained from cached visual features: can VQA find what a question asks about?

Reads the run's feature cache (RUN/features/train.h5, written by a frozen-visual GPV stage) and prints:
- how well a linear probe (softmax regression, 70/30 split) reads an object's colour, and as a control its
  category, from the cached features of the region covering it (IoU >= 0.5; colours from refexp
  expressions that name exactly one, categories from loc boxes), beside the majority class;
- for "Is there a X?" training questions, the AUC (yes vs no) of the best region's region-query score
  (`model.phrase_grounding`) with the question as asked, and rewritten as the loc prompt "Locate X.",
  each with the mean query token (as GPV scores queries) and with the best single token.
Prints figures only; nothing is asserted.

    python benchmarks/probe_vqa_grounding.py runs/quickstart/gpv [--samples 600] [--weights FOLDER]

--weights takes the region-query score and text encoder from another checkpoint folder whose visual
encoder is the run's (e.g. the run's train.init_from, the align stage it started from).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from gpvcli import boxes as box_ops
from gpvcli import runs
from gpvcli.data.dataset import feature_key
from gpvcli.data.store import SplitStore
from gpvcli.data.vocab import Vocab
from gpvcli.model.checkpoint import WEIGHTS
from gpvcli.model.feature_cache import FeatureCache
from gpvcli.model.gpv import build_model
from gpvcli.model.heads import mean_tokens
from gpvcli.model.text import build_tokenizer
from gpvcli.synth.render import COLOUR_NAMES
from gpvcli.train.config import load_run_config

PRESENCE = re.compile(r"Is there (?:a pair of|an|a|some) (.+?)(?: (?:in|on|at) .*)?\?")


def covering_regions(store: SplitStore, cache: FeatureCache, task: str, label_of, limit: int):
    """Features ([LayerNorm(roi) ; states]) of the cached region best covering each sample's first box."""
    features, labels = [], []
    for i in np.flatnonzero(np.asarray(store.tasks) == task)[:limit]:
        label = label_of(int(i))
        key = feature_key(store, int(i))
        if label is None or len(store.boxes[i]) == 0 or key not in cache:
            continue
        w, h = float(store.image_width[store.image[i]]), float(store.image_height[store.image[i]])
        target = torch.from_numpy(store.boxes[i][:1]).float() / torch.tensor([w, h, w, h])
        cached = cache.get([key])
        iou = box_ops.box_iou(target, box_ops.cxcywh_to_xyxy(cached["boxes"][0]))[0]
        q = int(iou.argmax())
        if iou[q] >= 0.5:
            roi = cached["roi"][0, q]
            features.append(torch.cat([torch.nn.functional.layer_norm(roi, roi.shape), cached["states"][0, q]]))
            labels.append(label)
    return torch.stack(features), labels


def linear_probe(x: torch.Tensor, labels: list) -> tuple[float, float]:
    """Held-out accuracy of softmax regression on the first 70%, and the majority class's share."""
    names = sorted(set(labels))
    y = torch.tensor([names.index(v) for v in labels])
    cut = int(0.7 * len(y))
    x = (x - x[:cut].mean(0)) / (x[:cut].std(0) + 1e-5)
    torch.manual_seed(0)
    net = torch.nn.Linear(x.shape[1], len(names))
    opt = torch.optim.Adam(net.parameters(), 1e-2, weight_decay=1e-3)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[:cut]), y[:cut]).backward()
        opt.step()
    with torch.no_grad():
        accuracy = (net(x[cut:]).argmax(-1) == y[cut:]).float().mean().item()
    return accuracy, max((y[cut:] == c).float().mean().item() for c in range(len(names)))


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half."""
    return float((positive[:, None] > negative[None]).mean() + 0.5 * (positive[:, None] == negative[None]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--weights", type=Path, help="checkpoint folder (default: RUN/last)")
    args = parser.parse_args()
    cfg = load_run_config(args.run / runs.CONFIG)
    data = runs.data_of(args.run)
    model = build_model(cfg.model, Vocab.load(data / "vocab.json"))
    model.load_state_dict(load_file((args.weights or args.run / runs.LAST) / WEIGHTS), strict=args.weights is None)
    model.eval()
    tokenizer = build_tokenizer(cfg.model.text, data / "query_vocab.txt")
    store, cache = SplitStore(data / "train.h5"), FeatureCache(args.run / runs.FEATURES / "train.h5", None)

    def named_colour(i: int) -> str | None:
        found = [c for c in COLOUR_NAMES if re.search(rf"\b{c}\b", store.query[i])]
        return found[0] if len(found) == 1 else None

    for what, task, label_of in (("colour", "refexp", named_colour),
                                 ("category", "loc", lambda i: int(store.category_id[i]))):
        x, labels = covering_regions(store, cache, task, label_of, 10 * args.samples)
        accuracy, majority = linear_probe(x, labels)
        print(f"{what} from the covering region: {len(labels)} regions, held-out accuracy {accuracy:.3f} "
              f"(majority {majority:.3f})")

    rows = [int(i) for i in np.flatnonzero(np.asarray(store.tasks) == "vqa")
            if PRESENCE.fullmatch(store.query[int(i)])][:args.samples]
    yes = np.array([store.target[i] == "yes" for i in rows])
    for phrasing in ("as asked", "as 'Locate X.'"):
        queries = [store.query[i] if phrasing == "as asked" else
                   f"Locate {PRESENCE.fullmatch(store.query[i]).group(1)}." for i in rows]
        best = {"mean token": [], "best token": []}
        for s in range(0, len(rows), 64):
            enc = tokenizer(queries[s:s + 64], padding=True, return_tensors="pt")
            mask = enc["attention_mask"]
            with torch.no_grad():
                visual = cache.get([feature_key(store, i) for i in rows[s:s + 64]])
                regions = model.regions(visual["roi"], visual["states"])
                tokens = model.text(enc["input_ids"], mask)
                mean = model.phrase_score(regions, mean_tokens(tokens, mask)[:, None])[..., 0]      # (B,Q)
                each = model.phrase_score(regions, tokens).masked_fill(~mask.bool()[:, None], -1e4)  # (B,Q,T)
            best["mean token"] += mean.max(-1).values.tolist()
            best["best token"] += each.flatten(1).max(-1).values.tolist()
        for how, scores in best.items():
            scores = np.array(scores)
            print(f"'Is there a X?' ({len(rows)}, {yes.mean():.2f} yes), {phrasing}, {how}: AUC of the best "
                  f"region's score {auc(scores[yes], scores[~yes]):.3f}")


if __name__ == "__main__":
    main()

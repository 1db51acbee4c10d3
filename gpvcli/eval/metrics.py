"""Evaluation metrics, one pure function per task (DESIGN.md section 5).

- `vqa_accuracy`: the official VQA v2 accuracy (or GPV-1's simpler variant).
- `cider_d`: CIDEr-D, numerically the same as pycocoevalcap's `Cider` scorer.
- `localization_ap`: per-sample average precision at one IoU threshold.
- `coco_map`: COCO-style mAP over localization samples via pycocotools (an extra).
- `classification_correct`: category name or synonym match.

Every function states its exact definition in its docstring; none touches files
or the network.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import re
from collections import Counter

import numpy as np
import torch

from gpvcli.boxes import box_iou
from gpvcli.data import categories as cats
from gpvcli.data.text import normalize
from gpvcli.errors import GPVError
from gpvcli.eval.tokenize import tokenize_caption

# ---------------------------------------------------------------------------
# VQA
# ---------------------------------------------------------------------------

# Tables of the official VQA v2 evaluation (GT-Vision-Lab/VQA, vqaEval.py). Its
# capitalized contraction keys ("Im", "Ive", "Id've", "I'dve") are left out: the
# lookup happens after lower-casing, so they can never match.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't",
    "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
          ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The official pattern "(?!<=\d)(\.)(?!\d)" meant a look-behind but wrote a look-ahead that can
# never fail, so it strips every period not followed by a digit; it also passes re.UNICODE (32)
# where `count` goes, so at most 32 periods are stripped. Both quirks are kept.
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_COUNT = 32


def _vqa_punctuation(text: str) -> str:
    """The official `processPunctuation`.

    Each symbol of `_PUNCT` is deleted when the text has it next to a space (either side) or
    contains a digit-comma-digit run anywhere; otherwise it becomes a space. The test reads
    the input text, not the partly processed one. Then periods not followed by a digit go.
    """
    out = text
    strip_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCT:
        glued = strip_all or (p + " " in text) or (" " + p in text)
        out = out.replace(p, "" if glued else " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def _vqa_digits_articles(text: str) -> str:
    """The official `processDigitArticle`: lower-case, split on whitespace, number words
    "none"/"zero".."ten" -> digits, drop "a"/"an"/"the", restore contractions ("dont" ->
    "don't"), join with single spaces."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def _vqa_clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(prediction: str, answers: list[str], *, variant: str = "official") -> float:
    """Accuracy of one predicted answer against the human answers (normally 10), in [0, 1].

    variant="official", the VQA v2 evaluation (GT-Vision-Lab/VQA vqaEval.py):
    1. prediction and every answer: newline/tab -> space, strip surrounding whitespace;
    2. only if the cleaned answers are not all identical (len(set(answers)) > 1), the answers
       and the prediction are normalized: punctuation (`_vqa_punctuation`), then lower-case,
       number words to digits, articles removed, contractions restored (`_vqa_digits_articles`).
       When all answers agree nothing is normalized, not even case: "Two" vs ten "2" scores 0;
    3. for each answer i, match_i = #answers j != i equal (exactly) to the prediction;
       acc = mean_i min(match_i / 3, 1). So 3 of 10 agreeing humans give 0.9, 2 give 0.6, 4 give 1.

    variant="gpv1", GPV-1's released evaluation: n = #answers equal to the prediction after
    lower-casing both; acc = min(n / 3, 1).

    Raises GPVError for an empty answer list or an unknown variant.
    """
    if not answers:
        raise GPVError("vqa_accuracy needs at least one ground-truth answer")
    if variant == "gpv1":
        pred = prediction.lower()
        return min(sum(a.lower() == pred for a in answers) / 3, 1.0)
    if variant != "official":
        raise GPVError(f"unknown VQA accuracy variant {variant!r}", hint="use 'official' or 'gpv1'")
    pred = _vqa_clean(prediction)
    gts = [_vqa_clean(a) for a in answers]
    if len(set(gts)) > 1:
        gts = [_vqa_digits_articles(_vqa_punctuation(a)) for a in gts]
        pred = _vqa_digits_articles(_vqa_punctuation(pred))
    hits = [g == pred for g in gts]
    total = sum(hits)
    return sum(min((total - h) / 3, 1.0) for h in hits) / len(hits)


# ---------------------------------------------------------------------------
# Captioning
# ---------------------------------------------------------------------------

_CIDER_N = 4
_CIDER_SIGMA = 6.0


def _ngram_counts(sentence: str) -> Counter:
    """Counts of every 1..4-gram of a whitespace-tokenized sentence (keys: word tuples)."""
    words = sentence.split()
    return Counter(tuple(words[i:i + k]) for k in range(1, _CIDER_N + 1) for i in range(len(words) - k + 1))


def _tfidf(counts: Counter, df: Counter, log_n_docs: float) -> tuple[list[dict], list[float], int]:
    """tf-idf vectors per n-gram order, their L2 norms, and the sentence "length".

    weight(g) = count(g) * (log(#keys) - log(max(1, df(g)))). The length is the number of
    bigrams (pycocoevalcap counts n-grams of index 1, i.e. bigrams, as the length).
    """
    vecs: list[dict] = [{} for _ in range(_CIDER_N)]
    for gram, count in counts.items():
        vecs[len(gram) - 1][gram] = count * (log_n_docs - math.log(max(1.0, df[gram])))
    norms = [math.sqrt(sum(w * w for w in v.values())) for v in vecs]
    return vecs, norms, sum(count for gram, count in counts.items() if len(gram) == 2)


def _cider_sim(cand: tuple, ref: tuple) -> float:
    """Sum over n-gram orders of the clipped cosine similarity times the gaussian length penalty."""
    (c_vec, c_norm, c_len), (r_vec, r_norm, r_len) = cand, ref
    penalty = math.exp(-((c_len - r_len) ** 2) / (2 * _CIDER_SIGMA**2))
    total = 0.0
    for n in range(_CIDER_N):
        val = sum(min(w, r_vec[n].get(g, 0.0)) * r_vec[n].get(g, 0.0) for g, w in c_vec[n].items())
        if c_norm[n] != 0 and r_norm[n] != 0:
            val /= c_norm[n] * r_norm[n]
        total += val * penalty
    return total


def cider_d(candidates: dict, references: dict, *, tokenize: bool = False) -> tuple[float, dict]:
    """CIDEr-D of candidate captions, as pycocoevalcap's `Cider().compute_score` computes it.

    Input: `candidates[k]` one caption string, `references[k]` a non-empty list of strings, for
    the same keys k (sample ids; GPV-1 scores each caption sample against all references of its
    image). Strings are already tokenized (space-joined) unless tokenize=True, in which case
    `tokenize_caption` is applied to every string first.

    Definition (n=4, sigma=6): over the K scored keys, df(g) = number of keys whose references
    contain n-gram g. A sentence is a vector per order n of tf-idf weights
    count(g) * (log K - log max(1, df(g))). For a candidate c and reference r:
    sim_n = sum_g min(c_g, r_g) * r_g / (|c_n| |r_n|) (the division skipped when a norm is 0),
    times exp(-(l_c - l_r)^2 / (2 sigma^2)), where l is the number of bigrams of the sentence
    (pycocoevalcap's length). score(k) = 10 * mean_n sum_r sim_n / #refs. The corpus score is
    the mean of score(k). A single key has log K = 0, so it scores 0.

    Returns (corpus_score, {k: score(k)}); (0.0, {}) for no keys. Raises GPVError when the key
    sets differ or a key has no references.
    """
    if set(candidates) != set(references):
        raise GPVError("cider_d: candidates and references must have the same keys")
    if not candidates:
        return 0.0, {}
    prep = tokenize_caption if tokenize else (lambda s: s)
    refs_counts = {}
    for k, refs in references.items():
        if not refs:
            raise GPVError(f"cider_d: sample {k!r} has no reference captions")
        refs_counts[k] = [_ngram_counts(prep(r)) for r in refs]
    df: Counter = Counter()
    for counts in refs_counts.values():
        df.update(set().union(*counts))
    log_n_docs = math.log(len(refs_counts))
    per_key = {}
    for k, cand in candidates.items():
        c = _tfidf(_ngram_counts(prep(cand)), df, log_n_docs)
        sims = [_cider_sim(c, _tfidf(r, df, log_n_docs)) for r in refs_counts[k]]
        per_key[k] = 10.0 * sum(sims) / _CIDER_N / len(sims)
    return sum(per_key.values()) / len(per_key), per_key


# ---------------------------------------------------------------------------
# Localization
# ---------------------------------------------------------------------------


def _as_tensor(x, shape_tail: tuple[int, ...]) -> torch.Tensor:
    # (N, *shape_tail); an empty input becomes (0, *shape_tail)
    return torch.as_tensor(x, dtype=torch.float64).reshape(-1, *shape_tail)


def localization_ap(pred_boxes, scores, gt_boxes, iou: float = 0.5) -> float:
    """Average precision of one localization sample at IoU >= `iou`, in [0, 1].

    Input: pred_boxes (N, 4) and gt_boxes (M, 4), xyxy corners in any one unit (pixels or
    normalized), scores (N,); numpy arrays, torch tensors or nested lists.

    Definition: detections are ranked by score, descending, ties keeping their input order
    (stable sort). In rank order, each detection goes to its highest-IoU ground-truth box (the
    first one on equal IoU); it is a true positive when that IoU >= `iou` and that box is not
    yet taken (the box is then taken), else a false positive, even when another free box
    overlaps it enough. With precision p_k and recall r_k = TP_k / M after the k-th detection,
    precision is made monotone from the right (p'_k = max_{j>=k} p_j) and
    AP = sum_k (r_k - r_{k-1}) p'_k (all-point interpolation). IoU is on continuous coordinates
    (`gpvcli.boxes.box_iou`; 0 for zero-area pairs).

    Edge cases: M = 0 -> 1.0 when N = 0 too, else 0.0 (every detection is false); N = 0 with
    M > 0 -> 0.0.

    This is the corrected metric: GPV-1's released code shifted every box by half its size
    before computing IoU.
    """
    boxes = _as_tensor(pred_boxes, (4,))  # (N, 4)
    gts = _as_tensor(gt_boxes, (4,))  # (M, 4)
    conf = _as_tensor(scores, ()).numpy()  # (N,)
    if len(conf) != len(boxes):
        raise GPVError(f"localization_ap: {len(boxes)} boxes but {len(conf)} scores")
    if len(gts) == 0:
        return 1.0 if len(boxes) == 0 else 0.0
    if len(boxes) == 0:
        return 0.0
    order = np.argsort(-conf, kind="stable")
    ious = box_iou(boxes[order], gts)  # (N, M), rows in rank order
    best_iou, best_gt = ious.max(dim=1)
    taken = [False] * len(gts)
    tp = np.zeros(len(order))
    for k, (v, j) in enumerate(zip(best_iou.tolist(), best_gt.tolist())):
        if v >= iou and not taken[j]:
            taken[j] = True
            tp[k] = 1.0
    precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(precision * tp) / len(gts))


def coco_map(predictions: list[dict], ground_truth: list[dict]) -> dict:
    """COCO-style detection metrics over localization samples, via pycocotools' COCOeval.

    Each sample is one "image" of an in-memory COCO dataset holding one category.
    ground_truth: one dict per sample: {"sample_id": hashable, "category": str (a COCO name),
    "boxes": (M, 4) xyxy}. predictions: {"sample_id", "boxes": (N, 4) xyxy, "scores": (N,)},
    at most one per sample id; the sample's category is the ground truth's. Boxes in pixels
    (the small/medium/large split uses COCO's pixel areas). COCOeval keeps the 100 best-scored
    boxes per sample.

    Returns {"mAP" (IoU .50:.95), "AP50", "AP75", "AP_small", "AP_medium", "AP_large"}, floats;
    -1.0 where no ground truth falls in that area range (pycocotools' convention); all 0.0 when
    there is no predicted box. Raises GPVError for a prediction of an unknown sample id.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
    image_of = {s["sample_id"]: i + 1 for i, s in enumerate(ground_truth)}
    cat_ids = {c.name: c.id for c in cats.categories()}
    sample_cat = {s["sample_id"]: cat_ids[s["category"]] for s in ground_truth}
    gt_anns = []
    for s in ground_truth:
        for x0, y0, x1, y1 in _as_tensor(s["boxes"], (4,)).tolist():
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": image_of[s["sample_id"]],
                            "category_id": sample_cat[s["sample_id"]], "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    dets = []
    for p in predictions:
        if p["sample_id"] not in image_of:
            raise GPVError(f"coco_map: prediction for unknown sample {p['sample_id']!r}")
        boxes = _as_tensor(p["boxes"], (4,)).tolist()
        for (x0, y0, x1, y1), score in zip(boxes, _as_tensor(p["scores"], ()).tolist()):
            dets.append({"image_id": image_of[p["sample_id"]], "category_id": sample_cat[p["sample_id"]],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    if not dets:
        return {n: 0.0 for n in names}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in image_of.values()], "annotations": gt_anns,
                      "categories": cats.coco_category_dicts()}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {n: float(v) for n, v in zip(names, evaluator.stats[:6])}


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------


@functools.cache
def _category_token_phrases(category: str) -> frozenset[tuple[str, ...]]:
    if category not in cats.by_name():
        raise GPVError(f"unknown COCO category {category!r}")
    return frozenset(tuple(normalize(p)) for p in cats.phrases(category))


def classification_correct(prediction: str, category: str) -> bool:
    """True when the normalized prediction (`gpvcli.data.text.normalize` tokens) equals the
    normalized category name or one of its synonym phrases, singular or plural
    (`categories.phrases`): "puppy" is a dog, "doughnuts" a donut, "hot dog" is not a dog,
    and an empty prediction is never right. Raises GPVError for an unknown category."""
    return tuple(normalize(prediction)) in _category_token_phrases(category)

"""Task descriptions, exactly as the seed's Table 4 prints them."""

from __future__ import annotations

import numpy as np

TASKS = ("vqa", "cap", "loc", "cls", "refexp")
TEXT_TASKS = ("vqa", "cap", "cls")
BOX_TASKS = ("loc", "refexp")

CAPTION_PROMPTS = (
    "Generate a caption.",
    "Generate a description.",
    "Describe this image.",
    "Describe the image.",
    "Caption this image.",
    "Caption the image.",
    "What is happening in this image?",
    "What is happening in the image?",
    "What is going on in this image?",
    "What is going on in the image?",
    "Generate a caption for this image.",
    "Generate a caption for the image.",
    "Generate a description for this image.",
)

CLASSIFICATION_PROMPTS = (
    "What is this?",
    "What is this object?",
    "What object is this?",
    "What is this thing?",
)

LOCALIZATION_PROMPTS = (
    "Locate [OBJECT].",
    "Locate [OBJECT] in the image.",
    "Locate [OBJECT] in this image.",
    "Locate instances of [OBJECT].",
    "Locate instances of [OBJECT] in the image.",
    "Locate instances of [OBJECT] in this image.",
    "Locate all instances of [OBJECT].",
    "Locate all instances of [OBJECT] in the image.",
    "Locate all instances of [OBJECT] in this image.",
    "Find [OBJECT].",
    "Find [OBJECT] in the image.",
    "Find [OBJECT] in this image.",
    "Find instances of [OBJECT].",
    "Find instances of [OBJECT] in the image.",
    "Find instances of [OBJECT] in this image.",
    "Find all instances of [OBJECT].",
    "Find all instances of [OBJECT] in the image.",
    "Find all instances of [OBJECT] in this image.",
)

PROMPTS = {"cap": CAPTION_PROMPTS, "cls": CLASSIFICATION_PROMPTS, "loc": LOCALIZATION_PROMPTS}


def draw_prompt(task: str, rng: np.random.Generator, obj: str | None = None) -> tuple[int, str]:
    """Draw one Table 4 prompt for `task`; returns (template id, text)."""
    templates = PROMPTS[task]
    i = int(rng.integers(len(templates)))
    text = templates[i]
    if obj is not None:
        text = text.replace("[OBJECT]", obj)
    return i, text

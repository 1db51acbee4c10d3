"""The torch device a command runs on."""

from __future__ import annotations

import torch


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """"auto" (CUDA when present), "cuda" or "cpu"; CUDA device `local_rank`."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")

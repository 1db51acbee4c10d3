"""The torch device a command runs on."""

from __future__ import annotations

import torch


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """"auto" (CUDA when present), "cuda" or "cpu"; CUDA device `local_rank`."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def use_fast_math(device: torch.device) -> None:
    """On a CUDA device, let float32 matmuls and convolutions use TF32 tensor cores (Ampere and later; a no-op
    on older GPUs). Nothing changes on the CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

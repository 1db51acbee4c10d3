"""The optimizer's parameter groups, for every model that holds the visual encoder."""

from __future__ import annotations

from torch import nn

GROUPS = ("backbone", "detr", "rest")


def param_groups(model: nn.Module, visual: nn.Module, *, detr: bool = True) -> dict[str, list[nn.Parameter]]:
    """`model`'s trainable parameters in model order: "backbone" (the CNN, its own learning rate), "detr"
    (the rest of the visual encoder `visual`, which `model` holds) and "rest". With detr=False the
    visual encoder's non-backbone parameters are left out (for a model that runs only the backbone)."""
    backbone = {id(p) for p in visual.backbone_parameters()}
    in_visual = {id(p) for p in visual.parameters()}
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in GROUPS}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in backbone:
            groups["backbone"].append(p)
        elif id(p) in in_visual:
            if detr:
                groups["detr"].append(p)
        else:
            groups["rest"].append(p)
    return groups

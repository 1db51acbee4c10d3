"""The visual encoder: DETR (transformers' implementation, ResNet backbone) plus RoI pooling.

Paper sizes (the `gpv1` preset): ResNet-50 backbone (layer type "bottleneck", depths
[3, 4, 6, 3], hidden sizes [256, 512, 1024, 2048], embedding 64), frozen batch norm,
conv1 and the first stage frozen; d_model 256, 8 heads, 6 encoder + 6 decoder layers,
FFN 2048, 100 queries, dropout 0.1, 2-way class head, images 480x640 (H x W), RoI 7x7
on the 2048-channel stride-32 map. About 41.5M parameters.

Two pitfalls of transformers' DETR (5.x) built without pretrained weights are
controlled here rather than inherited: its backbone wrapper freezes every backbone
parameter of a transformers ResNet (its name filter expects "stage.1", the ResNet
names them "stages.N"), and it swaps every BatchNorm for a frozen batch norm, which
is the identity at random initialization. `frozen_batchnorm` and
`freeze_stem_and_first_stage` decide both explicitly.

Checkpoints (`model.visual.pretrained`): a transformers DETR (a folder, or a hub name such as
facebook/detr-resnet-50 or facebook/detr-resnet-50@no_timm; either backbone layout, read without timm,
see gpvcli.model.pretrained) or a folder written by `save_visual` (detected by `visual.safetensors`).
Every backbone, encoder and decoder tensor must load; only the class head (its size is num_classes) and
the object queries of the other kind (plain query embeddings vs anchors) may start fresh, and only those
queries and BatchNorm step counters may be ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from gpvcli.boxes import cxcywh_to_xyxy
from gpvcli.config import from_dict, to_dict
from gpvcli.errors import GPVError
from gpvcli.io import atomic_path, write_text
from gpvcli.model.pretrained import (
    LoadReport,
    check_detr_config,
    check_load,
    detr_tensor_name,
    read_config,
    read_tensors,
    resolve,
    tensor_names,
)
from gpvcli.model.roi import roi_align_mean

log = logging.getLogger(__name__)

WEIGHTS_FILE = "visual.safetensors"
CONFIG_FILE = "visual_config.yaml"
SETTING = "model.visual.pretrained"
# tensors of the two kinds of object queries (VisualConfig.query_anchors)
_QUERY_TENSORS = ("detr.query_position_embeddings.", "anchors", "anchor_embedding.", "anchor_log_sigma")


@dataclass
class VisualConfig:
    """Sizes and training policy of the visual encoder. Defaults are the `tiny` CPU preset.

    Attributes:
        pretrained (str | None, None): weights to start from: a transformers DETR checkpoint (local folder,
            or hub name with an optional @revision, e.g. facebook/detr-resnet-50@no_timm) or a folder written
            by `save_visual`; None = random init. Every tensor but the class head must load (see the module doc).
        image_size (list[int], [96, 128]): (H, W) every image is resized to (aspect ratio not kept)
            by the data pipeline before the encoder.
        backbone_layer_type (str, "basic"): ResNet block type, "basic" (ResNet-18/34) or "bottleneck" (ResNet-50).
        backbone_depths (list[int], [1, 1, 1, 1]): number of blocks in each of the 4 ResNet stages.
        backbone_hidden_sizes (list[int], [32, 64, 128, 256]): output channels of each stage; the last one
            is the channel count C of the stride-32 map used for RoI pooling.
        backbone_embedding_size (int, 32): channels of the stem convolution (conv1).
        backbone_stage (int, 4): the ResNet stage whose map DETR and RoI pooling read: 4 = stride 32 (C5, as
            GPV-1), 3 = stride 16 (more tokens for small images).
        d_model (int, 128): DETR transformer width; the size of each decoder state.
        encoder_layers (int, 2): DETR transformer encoder layers.
        decoder_layers (int, 2): DETR transformer decoder layers.
        attention_heads (int, 4): attention heads in every encoder and decoder layer.
        ffn_dim (int, 256): feed-forward width in every encoder and decoder layer.
        num_queries (int, 20): learned object queries Q, i.e. boxes per image.
        query_anchors (bool, False): False = DETR's object queries (a learned position embedding each;
            the layout of a transformers DETR checkpoint). True = each query owns a learned anchor point
            (x, y), drawn uniformly over the image at init: its decoder position embedding is the sine code
            of that point (the code the image tokens carry) through a 2-layer MLP, its box centre is an
            offset from the point in logit space (Anchor DETR, DAB-DETR), and its cross-attention logits get
            a Gaussian bias around the point with a learned width (SMCA). Trained from scratch, plain queries
            ignore the image and output one box layout for every image for hundreds of steps; anchors with
            the bias read it (figures in the README).
        dropout (float, 0.1): dropout in the DETR transformer.
        num_classes (int, 2): class-head outputs. 2 = GPV objectness (0 object, 1 no-object);
            K + 1 for stage-0 detector pretraining (K categories, no-object last).
        frozen_batchnorm (bool, False): True = frozen batch norm (fixed statistics and affine, for
            pretrained weights); False = a trainable normalization (for training from scratch), see
            group_norm.
        group_norm (int, 0): with frozen_batchnorm False: 0 = ordinary BatchNorm; G > 0 = GroupNorm with
            G groups (at most the channel count), which behaves the same in training and evaluation. Small
            CPU batches make BatchNorm's running statistics drift from the batch statistics the model
            trained with, so in evaluation every query collapses onto one box (figures in the README).
        freeze_stem_and_first_stage (bool, False): never train conv1 (the stem) and the first ResNet
            stage (GPV-1 with pretrained weights: True).
        roi_size (int, 7): RoI-Align output grid side (averaged afterwards).
        roi_sampling_ratio (int, 2): bilinear samples per RoI bin side.
        region_crops (list[int] | None, None): (h, w), or None. When set, each region's descriptor also
            holds the backbone's averaged map of the region itself: its box, enlarged by the margin of the
            classification crops, resampled from the image to h x w (as R-CNN reads regions). Not in GPV-1:
            on small images the stride-32 map holds a few cells, each mixing several objects, so RoI pooling
            alone tells a region's category poorly; the crop classifier warm-up trains the backbone on
            crops of this size.
        region_colour (bool, False): with region_crops, the encoder also outputs "colour" (B, Q, 64):
            the histogram of each region crop's pixels over 4 x 4 x 4 RGB bins, a fixed low-level
            feature with no weights. Not in GPV-1: a small backbone trained from scratch to name
            categories keeps little of an object's colour, which VQA and captions ask about
            (`model.grounded_memory` hands it to the text decoder; figures in the README).
    """

    pretrained: str | None = None
    image_size: list[int] = field(default_factory=lambda: [96, 128])
    backbone_layer_type: Literal["basic", "bottleneck"] = "basic"
    backbone_depths: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    backbone_hidden_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    backbone_embedding_size: int = 32
    backbone_stage: int = 4
    d_model: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 2
    attention_heads: int = 4
    ffn_dim: int = 256
    num_queries: int = 20
    query_anchors: bool = False
    dropout: float = 0.1
    num_classes: int = 2
    frozen_batchnorm: bool = False
    group_norm: int = 0
    freeze_stem_and_first_stage: bool = False
    roi_size: int = 7
    roi_sampling_ratio: int = 2
    region_crops: list[int] | None = None
    region_colour: bool = False


def _to_trainable_norm(module: nn.Module, groups: int) -> None:
    """Replace every DetrFrozenBatchNorm2d below `module` by a trainable nn.BatchNorm2d with the same
    statistics (groups == 0) or by an nn.GroupNorm with min(groups, channels) groups and the same affine."""
    from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, DetrFrozenBatchNorm2d):
            channels = child.weight.numel()
            if groups:
                norm = nn.GroupNorm(math.gcd(groups, channels), channels, device=child.weight.device)
                keys = ("weight", "bias")
            else:
                norm = nn.BatchNorm2d(channels, device=child.weight.device)
                keys = ("weight", "bias", "running_mean", "running_var")
            with torch.no_grad():
                for key in keys:
                    getattr(norm, key).copy_(getattr(child, key))
            setattr(module, name, norm)
        else:
            _to_trainable_norm(child, groups)


class VisualEncoder(nn.Module):
    """DETR + class head + box MLP + RoI-Align mean on the backbone's stride-32 map.

    Trainability: `set_trainable(False)` freezes everything and keeps the module in eval
    mode even when a parent calls `.train()` (fixed BatchNorm statistics and no dropout,
    so outputs match a feature cache); `set_trainable(True)` restores the policy (all
    trainable except, with `freeze_stem_and_first_stage`, conv1 and the first stage).
    """

    def __init__(self, *, backbone_layer_type: str, backbone_depths: list[int], backbone_hidden_sizes: list[int],
                 backbone_embedding_size: int, backbone_stage: int, d_model: int, encoder_layers: int, decoder_layers: int,
                 attention_heads: int, ffn_dim: int, num_queries: int, query_anchors: bool, dropout: float,
                 num_classes: int,
                 frozen_batchnorm: bool, group_norm: int, freeze_stem_and_first_stage: bool, roi_size: int,
                 roi_sampling_ratio: int, region_crops: list[int] | None = None, region_colour: bool = False):
        super().__init__()
        # transformers is imported here, not at module level: reading a config stays fast (CLI errors)
        from transformers import DetrConfig, DetrModel, ResNetConfig
        from transformers.models.detr.modeling_detr import DetrMLPPredictionHead

        backbone = ResNetConfig(
            layer_type=backbone_layer_type, depths=list(backbone_depths), hidden_sizes=list(backbone_hidden_sizes),
            embedding_size=backbone_embedding_size, out_features=[f"stage{backbone_stage}"])
        config = DetrConfig(
            use_timm_backbone=False, backbone_config=backbone, auxiliary_loss=False, d_model=d_model,
            encoder_layers=encoder_layers, decoder_layers=decoder_layers, encoder_attention_heads=attention_heads,
            decoder_attention_heads=attention_heads, encoder_ffn_dim=ffn_dim, decoder_ffn_dim=ffn_dim,
            num_queries=num_queries, dropout=dropout)
        self.detr = DetrModel(config)
        if not frozen_batchnorm:
            _to_trainable_norm(self.detr.backbone.model, group_norm)
        self.class_head = nn.Linear(d_model, num_classes)
        self.box_head = DetrMLPPredictionHead(input_dim=d_model, hidden_dim=d_model, output_dim=4, num_layers=3)
        self.freeze_stem_and_first_stage = freeze_stem_and_first_stage
        self.roi_size = roi_size
        self.roi_sampling_ratio = roi_sampling_ratio
        self.region_crops = None if region_crops is None else tuple(region_crops)
        if region_colour and region_crops is None:
            raise GPVError("model.visual.region_colour reads the region crops",
                           hint="also set model.visual.region_crops=[h,w]")
        self.region_colour = region_colour
        self.load_report: LoadReport | None = None  # set by build_visual
        # transformers draws the object queries from N(0, 0.02): every query then starts (and, trained from
        # scratch, stays) nearly identical, so without dropout's noise all boxes collapse onto one.
        # The original DETR draws them from N(0, 1).
        nn.init.normal_(self.detr.query_position_embeddings.weight)
        self.anchors = self.anchor_embedding = self.anchor_log_sigma = None
        if query_anchors:
            self.detr.query_position_embeddings = None  # replaced by the anchors' embedding
            # stored in logit space, like the box centres predicted from them
            self.anchors = nn.Parameter(torch.logit(torch.rand(num_queries, 2) * 0.9 + 0.05))
            self.anchor_embedding = DetrMLPPredictionHead(input_dim=d_model, hidden_dim=d_model, output_dim=d_model,
                                                          num_layers=2)
            self.anchor_log_sigma = nn.Parameter(torch.full((num_queries,), math.log(0.15)))
        self.set_trainable(True)

    @property
    def state_dim(self) -> int:
        return self.detr.config.d_model

    @property
    def map_dim(self) -> int:
        """Channels C of the backbone map that DETR and RoI pooling read."""
        return self.detr.backbone.intermediate_channel_sizes[-1]

    @property
    def roi_dim(self) -> int:
        """Size of each region's pooled features: C, or 2C with region crops."""
        return self.map_dim if self.region_crops is None else 2 * self.map_dim

    def _always_frozen(self, backbone_param_name: str) -> bool:
        return self.freeze_stem_and_first_stage and backbone_param_name.startswith(("embedder.", "encoder.stages.0."))

    def set_trainable(self, trainable: bool) -> None:
        """Set requires_grad on every parameter according to the freeze policy (see class doc)."""
        self.trainable = trainable
        frozen = {id(p) for n, p in self.detr.backbone.model.named_parameters() if self._always_frozen(n)}
        for p in self.parameters():
            p.requires_grad_(trainable and id(p) not in frozen)
        if not trainable:
            self.eval()

    def train(self, mode: bool = True) -> VisualEncoder:
        return super().train(mode and self.trainable)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The CNN backbone's parameters that the policy may train (its own learning rate)."""
        return [p for n, p in self.detr.backbone.model.named_parameters() if not self._always_frozen(n)]

    def detr_parameters(self) -> list[nn.Parameter]:
        """Every other parameter: input projection, transformer, queries, class and box heads."""
        backbone = {id(p) for p in self.detr.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]

    def backbone_map(self, images: Tensor, pixel_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The CNN's map that DETR and RoI pooling read: (B, C, Hf, Wf) and its mask (B, Hf, Wf) bool."""
        b, _, h, w = images.shape
        if pixel_mask is None:
            pixel_mask = torch.ones((b, h, w), dtype=torch.long, device=images.device)
        return self.detr.backbone(images, pixel_mask)[-1]

    @property
    def colour_dim(self) -> int:
        """Values of the "colour" output per region (0 without region_colour)."""
        return COLOUR_BINS ** 3 if self.region_colour else 0

    def crop_features(self, crops: Tensor) -> Tensor:
        """crops (B, Q, 3, h, w) -> (B, Q, C): the backbone's map of each region's crop, averaged."""
        fmap, _ = self.backbone_map(crops.flatten(0, 1))                                # (B*Q,C,h',w')
        return fmap.mean(dim=(2, 3)).reshape(*crops.shape[:2], -1)

    def _anchor_bias(self, map_size: tuple[int, int], token_mask: Tensor) -> Tensor:
        """Additive cross-attention bias (B, 1, Q, Hf*Wf): a Gaussian of each query's width around its anchor
        over the token centres; the dtype's minimum on padding tokens."""
        hf, wf = map_size
        ys = (torch.arange(hf, device=token_mask.device) + 0.5) / hf
        xs = (torch.arange(wf, device=token_mask.device) + 0.5) / wf
        centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)  # (T, 2) row-major
        d2 = (self.anchors.sigmoid()[:, None, :] - centres[None]).pow(2).sum(-1)  # (Q, T)
        bias = -d2 / (2 * torch.exp(2 * self.anchor_log_sigma))[:, None]
        bias = bias[None, None].expand(token_mask.shape[0], 1, -1, -1)
        return bias.masked_fill(~token_mask.bool()[:, None, None, :], torch.finfo(bias.dtype).min)

    def forward(self, images: Tensor, pixel_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Run DETR and pool each predicted box.

        images: (B, 3, H, W) normalized. pixel_mask: (B, H, W), 1 = real pixel, 0 = padding; None = all real.
        Returns:
            "boxes": (B, Q, 4) normalized cxcywh in [0, 1] of the input tensor's (H, W).
            "states": (B, Q, d_model) decoder output states.
            "objectness": (B, Q, num_classes) class logits (index num_classes - 1 = no-object).
            "roi": (B, Q, C) RoI-Align (roi_size x roi_size, bilinear) of each box on the last backbone
                map, averaged over the grid; not normalized.
        """
        b = images.shape[0]
        fmap, mask = self.backbone_map(images, pixel_mask)
        pos = self.detr.position_embedding(shape=fmap.shape, device=fmap.device, dtype=fmap.dtype, mask=mask)
        pos = pos.flatten(2).transpose(1, 2)  # (B, d_model, Hf, Wf) -> (B, Hf*Wf, d_model)
        tokens = self.detr.input_projection(fmap).flatten(2).transpose(1, 2)  # (B, Hf*Wf, d_model)
        token_mask = mask.flatten(1)  # (B, Hf*Wf)
        memory = self.detr.encoder(inputs_embeds=tokens, attention_mask=token_mask,
                                   spatial_position_embeddings=pos).last_hidden_state  # (B, Hf*Wf, d_model)
        if self.anchors is None:
            query_pos = self.detr.query_position_embeddings.weight
        else:
            query_pos = self.anchor_embedding(sine_code(self.anchors.sigmoid(), self.state_dim))
        query_pos = query_pos.unsqueeze(0).expand(b, -1, -1)  # (B, Q, d_model)
        cross_mask = token_mask if self.anchors is None else self._anchor_bias(fmap.shape[-2:], token_mask)
        states = self.detr.decoder(
            inputs_embeds=torch.zeros_like(query_pos), encoder_hidden_states=memory,
            encoder_attention_mask=cross_mask, spatial_position_embeddings=pos,
            object_queries_position_embeddings=query_pos).last_hidden_state  # (B, Q, d_model)
        boxes = self.box_head(states)
        if self.anchors is not None:
            boxes = torch.cat([boxes[..., :2] + self.anchors, boxes[..., 2:]], dim=-1)
        boxes = boxes.sigmoid()
        roi = roi_align_mean(fmap, cxcywh_to_xyxy(boxes), output_size=self.roi_size,
                             sampling_ratio=self.roi_sampling_ratio)
        out = {"boxes": boxes, "states": states, "objectness": self.class_head(states)}
        if self.region_crops is not None:
            from gpvcli.data.prepare import CROP_MARGIN

            # the crops' geometry takes no gradient (the boxes learn from the box losses)
            crops = region_crops(images, boxes.detach(), self.region_crops, CROP_MARGIN)  # (B,Q,3,h,w)
            roi = torch.cat([roi, self.crop_features(crops)], dim=-1)  # (B,Q,C) + (B,Q,C) -> (B,Q,2C)
            if self.region_colour:
                out["colour"] = colour_histogram(crops)
        return {**out, "roi": roi}


def region_crops(images: Tensor, boxes: Tensor, size: tuple[int, int], margin: float) -> Tensor:
    """images (B, 3, H, W), boxes (B, Q, 4) normalized cxcywh -> (B, Q, 3, h, w): each box enlarged by
    `margin` of its width / height on each side, resampled bilinearly; zero (the normalized mean colour)
    outside the image."""
    b, q = boxes.shape[:2]
    h, w = size
    cx, cy, bw, bh = boxes.unbind(-1)                                                  # (B,Q) each
    scale = 1 + 2 * margin
    theta = torch.zeros(b, q, 2, 3, dtype=images.dtype, device=images.device)      # crop -> image, in [-1, 1]
    theta[..., 0, 0], theta[..., 0, 2] = bw * scale, 2 * cx - 1
    theta[..., 1, 1], theta[..., 1, 2] = bh * scale, 2 * cy - 1
    grid = F.affine_grid(theta.reshape(b * q, 2, 3), [b * q, 3, h, w], align_corners=False)  # (B*Q,h,w,2)
    grid = grid.reshape(b, q * h, w, 2)                                                # crops stacked vertically
    crops = F.grid_sample(images, grid, align_corners=False)                           # (B,3,Q*h,w)
    return crops.reshape(b, 3, q, h, w).transpose(1, 2)                                # (B,Q,3,h,w)


COLOUR_BINS = 4   # per RGB channel


def colour_histogram(crops: Tensor) -> Tensor:
    """crops (B, Q, 3, h, w), ImageNet-normalized -> (B, Q, COLOUR_BINS**3): the share of each crop's
    pixels in each RGB bin (bin index r * 16 + g * 4 + b, channel values cut into equal quarters of [0, 1])."""
    from gpvcli.data.images import IMAGENET_MEAN, IMAGENET_STD

    mean = crops.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = crops.new_tensor(IMAGENET_STD)[:, None, None]
    level = ((crops * std + mean).clamp(0, 1) * COLOUR_BINS).long().clamp(max=COLOUR_BINS - 1)  # (B,Q,3,h,w)
    index = (level[:, :, 0] * COLOUR_BINS + level[:, :, 1]) * COLOUR_BINS + level[:, :, 2]        # (B,Q,h,w)
    index = index.flatten(2)                                                                     # (B,Q,h*w)
    # counted in float32 (exact for any crop size here; bfloat16 is not past 256), without a one-hot
    # tensor of every pixel
    counts = torch.zeros(*index.shape[:2], COLOUR_BINS ** 3, device=crops.device)
    counts.scatter_add_(2, index, torch.ones(index.shape, device=crops.device))                 # (B,Q,64)
    return counts.to(crops.dtype) / index.shape[2]


def sine_code(points: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """DETR's sine position code of points (..., 2) = (x, y) in [0, 1]: (..., dim), y's half first, as
    transformers' DetrSinePositionEmbedding codes the token at that normalized position."""
    half = dim // 2
    freq = temperature ** (2 * (torch.arange(half, device=points.device) // 2) / half)  # (half,)
    angles = points[..., None] * (2 * math.pi) / freq  # (..., 2, half)
    code = torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)  # (..., 2, half)
    return torch.cat((code[..., 1, :], code[..., 0, :]), dim=-1)


def _module_kwargs(cfg: VisualConfig) -> dict:
    kwargs = dataclasses.asdict(cfg)
    del kwargs["pretrained"], kwargs["image_size"]
    return kwargs


def _is_query(name: str) -> bool:
    return name.startswith(_QUERY_TENSORS)


def visual_folder(cfg: VisualConfig, *, download: bool = True) -> Path:
    """The local folder of `cfg.pretrained` (gpvcli.model.pretrained.resolve), its DETR config.json checked
    against `cfg`."""
    folder = resolve(cfg.pretrained, SETTING, own_files=(WEIGHTS_FILE,), download=download)
    if not (folder / WEIGHTS_FILE).is_file():
        check_detr_config(read_config(folder), cfg, SETTING, cfg.pretrained)
    return folder


def _load_checkpoint(encoder: VisualEncoder, source: dict[str, Tensor], spec: str, folder: Path) -> LoadReport:
    """Copy `source` (our names) into `encoder` after checking that it fits (see the module doc)."""
    own = encoder.state_dict()
    names = tensor_names(own)
    reshaped = {n: (tuple(source[n].shape), tuple(own[n].shape)) for n in names
                if n in source and source[n].shape != own[n].shape}
    missing = [n for n in names if n not in source]
    unexpected = [n for n in source if n not in own]
    check_load(setting=SETTING, spec=spec, missing=missing, unexpected=unexpected, reshaped=reshaped,
               may_start_fresh=lambda n: n.startswith("class_head.") or _is_query(n) and n not in reshaped,
               may_ignore=lambda n: _is_query(n) or n.endswith("num_batches_tracked"),
               hint="set model.visual's sizes and norms to the checkpoint's (DETR-R50: the gpv1 preset's)")
    loaded = [n for n in names if n in source and n not in reshaped]
    with torch.no_grad():
        for n in loaded:
            own[n].copy_(source[n])
    return LoadReport("visual", spec, str(folder), len(loaded), [n for n in names if n not in loaded], unexpected)


def build_visual(cfg: VisualConfig) -> VisualEncoder:
    """The encoder of `cfg`: random init, or every tensor of `cfg.pretrained` (a transformers DETR or a
    `save_visual` folder) but the documented heads; `encoder.load_report` says what was loaded."""
    encoder = VisualEncoder(**_module_kwargs(cfg))
    if cfg.pretrained is None:
        encoder.load_report = LoadReport.random_init("visual", encoder)
        return encoder
    folder = visual_folder(cfg)
    if (folder / WEIGHTS_FILE).is_file():
        source = load_file(folder / WEIGHTS_FILE)
    else:
        source = {detr_tensor_name(n): t for n, t in read_tensors(folder).items()}
    encoder.load_report = _load_checkpoint(encoder, source, cfg.pretrained, folder)
    log.info("visual weights: %s", encoder.load_report.line())
    return encoder


def save_visual(encoder: VisualEncoder, cfg: VisualConfig, folder: str | Path) -> Path:
    """Write `visual.safetensors` (the state dict) and `visual_config.yaml` into `folder`."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_text(folder / CONFIG_FILE, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return folder


def load_visual(folder: str | Path) -> tuple[VisualEncoder, VisualConfig]:
    """Rebuild the encoder saved by `save_visual` (exact weights) and its config."""
    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        raise GPVError(f"{folder} holds no saved visual encoder ({WEIGHTS_FILE} + {CONFIG_FILE})")
    cfg = from_dict(VisualConfig, yaml.safe_load((folder / CONFIG_FILE).read_text()) or {})
    encoder = VisualEncoder(**_module_kwargs(cfg))
    try:
        encoder.load_state_dict(load_file(folder / WEIGHTS_FILE))
    except RuntimeError as e:
        raise GPVError(f"visual weights in {folder} do not fit {CONFIG_FILE}: {e}")
    return encoder, cfg

"""`MBTConfig`: the one description of an MBT network.

Field names follow the paper and Scenic's `config.model` where they exist
(`fusion_layer`, `share_encoder`, `test_with_bottlenecks`, `classifier`, ...), so that
paper ablations and official checkpoints map onto them one to one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError

MODALITIES = ("rgb", "spectrogram")
"""Modalities the network knows. Scenic's `_MODALITIES`: the fixed order used for context."""

CLASSIFIERS = ("token", "gap", "gmp", "gsp")
FUSIONS = ("bottleneck", "vanilla")
TEMPORAL_ENCODINGS = ("3d_conv", "temporal_sampling")
TUBELET_INITS = ("central_frame", "average_frame", "default")
GELUS = ("tanh", "exact")

LayerKind = Literal["separate", "bottleneck", "cross", "joint"]
"""What one encoder layer does with the modalities (see `MBTConfig.fusion_schedule`):
'separate': each modality through its tower alone; 'bottleneck': each modality with the
shared bottleneck tokens appended; 'cross': each modality attends to every modality's
tokens in its own tower; 'joint': one sequence of all modalities through the shared
encoder."""

FUSION_VARIANTS: dict[str, dict[str, Any]] = {
    "audio-only": {"modalities": ("spectrogram",)},
    "video-only": {"modalities": ("rgb",)},
    "late": {"fusion": "bottleneck", "fusion_layer": 12},
    "bottleneck": {"fusion": "bottleneck", "fusion_layer": 8},
    "vanilla": {"fusion": "vanilla", "fusion_layer": 8},
    "early": {"fusion": "vanilla", "share_encoder": True, "fusion_layer": 0},
}
"""The paper's fusion variants as changes to MBT-B (12 layers): one modality, late fusion
(towers meet only in the head), bottleneck fusion and vanilla cross-attention from layer
8, early fusion in one shared encoder. `fusion_variant` applies one at any depth."""

VIT_SIZES: dict[str, dict[str, int]] = {
    "Ti": {"hidden_size": 192, "num_layers": 12, "num_heads": 3, "mlp_dim": 768},
    "S": {"hidden_size": 384, "num_layers": 12, "num_heads": 6, "mlp_dim": 1536},
    "B": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "mlp_dim": 3072},
    "L": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "mlp_dim": 4096},
}
"""ViT sizes (Dosovitskiy et al.); MBT-B is the paper's model."""

PAPER_VIT = "vit_base_patch16_224.orig_in21k"
"""The initialisation of the paper: the original Google ImageNet-21k ViT-B/16 (big_vision /
`vision_transformer`). Not timm's `vit_base_patch16_224_in21k`: that alias now loads the
AugReg weights (`.augreg_in21k`), a different model."""


@dataclass
class MBTConfig:
    """Architecture of an MBT model. Defaults: MBT-B as in the paper (ViT-B, 4 bottlenecks
    from layer 8, 8 sampled frames of 224x224 and 8 s of 128-bin log-mel, token head)."""

    num_classes: int = 527
    """Output width. With `class_splits` it is the sum of the splits."""
    modalities: tuple[str, ...] = ("spectrogram", "rgb")
    """Modalities in fusion order (Scenic's `modality_fusion`): the order in which the
    towers update the bottleneck, concatenate for early fusion and pool."""

    hidden_size: int = 768
    """Token width D."""
    num_layers: int = 12
    """Transformer layers per tower."""
    num_heads: int = 12
    """Attention heads; must divide `hidden_size`."""
    mlp_dim: int = 3072
    """Hidden width of each block's MLP."""

    fusion_layer: int = 8
    """First layer at which modalities exchange information: 0 is early fusion,
    `num_layers` is late fusion (towers meet only in the averaged head)."""
    fusion: str = "bottleneck"
    """'bottleneck': MBT, towers exchange information only through `num_bottlenecks`
    shared tokens. 'vanilla': each token attends to every modality's tokens (with separate
    towers this is cross-modal attention; with `share_encoder` one joint encoder)."""
    num_bottlenecks: int = 4
    """Bottleneck tokens B (Scenic adds one more with the token classifier)."""
    share_encoder: bool = False
    """One set of block weights for all modalities instead of one tower per modality."""
    test_with_bottlenecks: bool = True
    """If False, bottleneck models run every layer unimodally at evaluation."""

    patch_size: tuple[int, int] = (16, 16)
    """Spatial patch (height, width) for frames; also the (time, mel) patch of the
    spectrogram, as in Scenic where both use `patches.size[:2]`."""
    temporal_encoding: str = "temporal_sampling"
    """How rgb becomes tokens: '3d_conv' (tubelets of `tubelet_size` frames) or
    'temporal_sampling' (`n_sampled_frames` frames, each cut into 2-D patches)."""
    tubelet_size: int = 2
    """Frames per tubelet for '3d_conv'."""
    tubelet_init: str = "central_frame"
    """How a 2-D ViT patch kernel becomes a tubelet kernel ('central_frame',
    'average_frame') and how tubelets are initialised at random ('default' = plain)."""
    num_frames: int = 8
    """Frames in an rgb input clip."""
    n_sampled_frames: int = 8
    """Frames picked from the clip by 'temporal_sampling' (Scenic's rule, see
    `sampled_frame_indices`); all of them if it is >= `num_frames`."""
    image_size: tuple[int, int] = (224, 224)
    """Frame (height, width)."""
    spectrogram_size: tuple[int, int] = (800, 128)
    """Spectrogram (time bins, mel bins): 8 s at 100 frames/s, 128 mel bins."""
    spectrogram_channels: int = 3
    """Input channels of the spectrogram patch kernel. Scenic tiles the log-mel to 3
    channels so that the ViT kernel can be restored; 1-channel inputs are accepted and
    handled exactly by summing the kernel over channels."""
    spectrogram_patch_stride: tuple[int, int] | None = None
    """(time, mel) stride of the spectrogram patches; None: `patch_size` (non-overlapping,
    Scenic). AST cuts 16x16 patches at stride (10, 10): a 1024x128 spectrogram gives a
    101 x 12 grid, (T - ph) // stride + 1 per axis (`patch_grid`), still in time-major
    order t * F + f. The kernel (`embeddings.spectrogram.proj.weight`) keeps its shape."""
    distillation_token: bool = False
    """A second prefix token in the spectrogram tower after its cls token (AST's
    distillation token, parameter `dist_token` [1, 1, D]); `pos_embed.spectrogram` then has
    rows cls, dist, patches. The 'token' head pools the mean of the two, as AST does
    ((x[:, 0] + x[:, 1]) / 2). Needs `classifier='token'` and the spectrogram modality."""

    classifier: str = "token"
    """'token': one cls token per modality, one shared head, logits averaged over
    modalities. 'gap' / 'gmp' / 'gsp': mean / max / sum over all tokens of all modalities
    jointly, as the official code does."""
    representation_size: int | None = None
    """If set, a shared Dense+tanh `pre_logits` layer of this width before the head."""
    head_norm: bool = False
    """A LayerNorm (parameters `head_norm.weight`, `head_norm.bias`) on the pooled feature
    before `pre_logits` and the classifier, as the AST (`mlp_head.0`), CAV-MAE (`mlp_head.0`)
    and AudioMAE (`fc_norm`) heads have; Scenic has none."""
    head_norm_eps: float | None = None
    """Epsilon of `head_norm`; None: `layer_norm_eps`. The original AST's head is a default
    `nn.LayerNorm` (1e-5) on a 1e-6 encoder."""
    modality_norm: bool = False
    """One final LayerNorm per modality (parameters `modality_norms.<modality>.weight` /
    `.bias`, CAV-MAE's `norm_a` / `norm_v`) instead of the one shared `norm` (Scenic)."""
    final_norm: bool = True
    """False: no LayerNorm after the last block, so that a pooling head sees the raw tokens
    and `head_norm` alone normalises the pooled feature (AudioMAE fine-tuned: mean of the
    patch tokens, then `fc_norm`)."""
    cls_token: bool = False
    """With a pooling head ('gap', 'gmp', 'gsp'): one cls token per modality still takes part
    in attention, but the head pools the patch tokens only (AudioMAE's `global_pool`). The
    'token' head always has its cls token."""

    gelu: str = "tanh"
    """The MLPs' GELU: 'tanh' (the approximation Scenic uses) or 'exact' (erf, as
    `torch.nn.GELU()` in AST, CAV-MAE and AudioMAE)."""
    layer_norm_eps: float = 1e-6
    """Epsilon of every LayerNorm (block, final and head norms): 1e-6 as Scenic, timm and
    AudioMAE; HF AST uses 1e-12, CAV-MAE 1e-5."""

    dropout_rate: float = 0.0
    """Dropout after the attention projection and inside the MLP."""
    attention_dropout_rate: float = 0.0
    """Dropout on attention probabilities."""
    stochastic_depth: float = 0.3
    """Droplayer rate of the last layer (Scenic's `stochastic_droplayer_rate`): layer l
    drops each residual branch of each example with p = l / (L-1) * rate, without
    rescaling, independently per branch and per call."""

    multi_label: bool = True
    """Labels are independent (sigmoid, AudioSet) rather than exclusive (softmax)."""
    class_splits: tuple[int, ...] | None = None
    """Sizes of several softmax heads sharing the output (EPIC-KITCHENS: verb, noun)."""
    split_names: tuple[str, ...] | None = None
    """Names of the `class_splits` heads."""
    label_names: tuple[str, ...] | None = None
    """Display names of the classes, kept with saved models for predictions."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata saved with the model (dataset, normalisation statistics, ...)."""

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        self.patch_size = _pair(self.patch_size, "patch_size")
        self.image_size = _pair(self.image_size, "image_size")
        self.spectrogram_size = _pair(self.spectrogram_size, "spectrogram_size")
        if self.spectrogram_patch_stride is not None:
            self.spectrogram_patch_stride = _pair(self.spectrogram_patch_stride, "spectrogram_patch_stride")
        for name in ("class_splits", "split_names", "label_names"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(value))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid field."""
        if not self.modalities:
            raise ConfigError("modalities: at least one modality is needed")
        for m in self.modalities:
            if m not in MODALITIES:
                raise ConfigError(f"modalities: unknown modality {m!r}; known: {list(MODALITIES)}")
        if len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"modalities: repeated modality in {list(self.modalities)}")
        for name in ("num_classes", "hidden_size", "num_layers", "num_heads", "mlp_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be a positive integer, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"num_heads: {self.num_heads} heads do not divide hidden_size {self.hidden_size}"
            )
        if not 0 <= self.fusion_layer <= self.num_layers:
            raise ConfigError(
                f"fusion_layer: must be in [0, num_layers={self.num_layers}], got {self.fusion_layer}"
            )
        _choice(self.fusion, FUSIONS, "fusion")
        _choice(self.classifier, CLASSIFIERS, "classifier")
        _choice(self.temporal_encoding, TEMPORAL_ENCODINGS, "temporal_encoding")
        _choice(self.tubelet_init, TUBELET_INITS, "tubelet_init")
        if self.fusion == "bottleneck" and self.num_bottlenecks < 1:
            raise ConfigError(f"num_bottlenecks: must be >= 1 for bottleneck fusion, got {self.num_bottlenecks}")
        if self.tubelet_size < 1 or self.num_frames < 1 or self.n_sampled_frames < 1:
            raise ConfigError("tubelet_size, num_frames and n_sampled_frames must be >= 1")
        _choice(self.gelu, GELUS, "gelu")
        if not (isinstance(self.layer_norm_eps, (int, float)) and 0 < self.layer_norm_eps < 1):
            raise ConfigError(f"layer_norm_eps: must be a number in (0, 1), got {self.layer_norm_eps!r}")
        if self.head_norm_eps is not None and not 0 < self.head_norm_eps < 1:
            raise ConfigError(f"head_norm_eps: must be None or a number in (0, 1), got {self.head_norm_eps!r}")
        if self.spectrogram_patch_stride is not None and min(self.spectrogram_patch_stride) < 1:
            raise ConfigError(
                f"spectrogram_patch_stride: must be None or two positive integers, "
                f"got {list(self.spectrogram_patch_stride)}"
            )
        if self.distillation_token and self.classifier != "token":
            raise ConfigError(
                f"distillation_token: needs classifier='token' (the head pools the cls and distillation "
                f"tokens), got classifier={self.classifier!r}"
            )
        if not self.final_norm and self.modality_norm:
            raise ConfigError("final_norm: False (no final norm) contradicts modality_norm (one per modality)")
        if self.distillation_token and "spectrogram" not in self.modalities:
            raise ConfigError("distillation_token: it belongs to the spectrogram tower, which this model lacks")
        if self.spectrogram_channels not in (1, 3):
            raise ConfigError(f"spectrogram_channels: must be 1 or 3, got {self.spectrogram_channels}")
        for name in ("dropout_rate", "attention_dropout_rate", "stochastic_depth"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.representation_size is not None and self.representation_size < 1:
            raise ConfigError(f"representation_size: must be None or >= 1, got {self.representation_size}")
        if self.class_splits is not None:
            if sum(self.class_splits) != self.num_classes:
                raise ConfigError(
                    f"class_splits: {list(self.class_splits)} sum to {sum(self.class_splits)}, "
                    f"not num_classes={self.num_classes}"
                )
            if self.multi_label:
                raise ConfigError("class_splits: several softmax heads need multi_label=False")
            if self.split_names is not None and len(self.split_names) != len(self.class_splits):
                raise ConfigError("split_names: need one name per class split")
        if self.label_names is not None and len(self.label_names) != self.num_classes:
            raise ConfigError(
                f"label_names: {len(self.label_names)} names for num_classes={self.num_classes}"
            )
        for m in self.modalities:
            if self.num_patches(m) < 1:
                raise ConfigError(f"{m}: the input is smaller than one patch ({self.patch_size})")

    # ------------------------------------------------------------------ geometry
    @property
    def spectrogram_stride(self) -> tuple[int, int]:
        """The (time, mel) stride of the spectrogram patches: `spectrogram_patch_stride`,
        or `patch_size` when that is None."""
        return self.spectrogram_patch_stride or self.patch_size

    def patch_grid(self, modality: str) -> tuple[int, int, int]:
        """(time, height, width) of the token grid of a modality, excluding prefix tokens.
        The spectrogram's is (1, time patches, mel patches), (size - patch) // stride + 1
        per axis: the one rule for every user of the grid."""
        ph, pw = self.patch_size
        if modality == "spectrogram":
            (t, f), (st, sf) = self.spectrogram_size, self.spectrogram_stride
            return 1, max(0, (t - ph) // st + 1), max(0, (f - pw) // sf + 1)
        h, w = self.image_size
        if self.temporal_encoding == "3d_conv":
            return self.num_frames // self.tubelet_size, h // ph, w // pw
        n = len(sampled_frame_indices(self.num_frames, self.n_sampled_frames))
        if h % ph:  # frames are stacked vertically before patching (Scenic), rows may straddle frames
            return 1, (n * h) // ph, w // pw
        return n, h // ph, w // pw

    def num_patches(self, modality: str) -> int:
        """Patch tokens of a modality, without the prefix tokens."""
        t, h, w = self.patch_grid(modality)
        return t * h * w

    def num_prefix_tokens(self, modality: str) -> int:
        """Tokens before a modality's patches: its cls token with the 'token' head, and the
        distillation token in the spectrogram tower with `distillation_token`."""
        cls = 1 if self.classifier == "token" or self.cls_token else 0
        return cls + (1 if self.distillation_token and modality == "spectrogram" else 0)

    def num_tokens(self, modality: str) -> int:
        """Tokens of a modality entering the encoder: prefix tokens and patches."""
        return self.num_prefix_tokens(modality) + self.num_patches(modality)

    @property
    def num_bottleneck_tokens(self) -> int:
        """Learned bottleneck tokens: B, plus one with the token classifier (as Scenic)."""
        return self.num_bottlenecks + (1 if self.classifier == "token" else 0)

    def fusion_schedule(self, train: bool = False) -> tuple[LayerKind, ...]:
        """What each encoder layer does, in training or at evaluation: the one definition
        that `MBT.forward`, the FLOP count and the trainer follow. Layers before
        `fusion_layer` run the towers apart; from it on the modalities exchange through
        the bottleneck tokens (not at evaluation with `test_with_bottlenecks=False`) or
        attend to each other's tokens ('cross', or 'joint' with `share_encoder`)."""
        fused: LayerKind = "separate"
        if self.num_modalities > 1 and self.fusion == "bottleneck":
            fused = "bottleneck" if train or self.test_with_bottlenecks else "separate"
        elif self.num_modalities > 1:
            fused = "joint" if self.share_encoder else "cross"
        return tuple("separate" if layer < self.fusion_layer else fused for layer in range(self.num_layers))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MBTConfig:
        from ..overrides import from_dict

        return from_dict(cls, data)

    def replace(self, **changes: Any) -> MBTConfig:
        """A copy with some fields changed (and validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_vit(cls, size: str, **overrides: Any) -> MBTConfig:
        """An MBT config with the transformer of a standard ViT size ('Ti', 'S', 'B', 'L')."""
        if size not in VIT_SIZES:
            raise ConfigError(f"ViT size: unknown {size!r}; known: {list(VIT_SIZES)}")
        return cls(**{**VIT_SIZES[size], **overrides})


def fusion_variant(name: str, base: MBTConfig, fusion_layer: int | None = None) -> MBTConfig:
    """`base` turned into the fusion variant `name` of `FUSION_VARIANTS`. Fused variants
    start fusing at `fusion_layer`, by default at their MBT-B layer scaled to the depth of
    `base` (8 of 12 layers); late fusion always at the last layer."""
    if name not in FUSION_VARIANTS:
        raise ConfigError(f"fusion variant: unknown {name!r}; expected one of {list(FUSION_VARIANTS)}")
    changes = dict(FUSION_VARIANTS[name])
    if name == "late":
        changes["fusion_layer"] = base.num_layers
    elif "fusion_layer" in changes:
        scaled = round(changes["fusion_layer"] * base.num_layers / 12)
        changes["fusion_layer"] = scaled if fusion_layer is None else fusion_layer
    return base.replace(**changes)


def sampled_frame_indices(num_frames: int, n_sampled_frames: int) -> list[int]:
    """Frames that 'temporal_sampling' keeps, by the official rule.

    Scenic takes `round(arange(T/(n+1), T, T/(n+1)))` in float32, clipped to T-1, which
    spreads n frames evenly and avoids both ends; with n >= T it keeps every frame.
    Example: T=32, n=8 -> [4, 7, 11, 14, 18, 21, 25, 28].
    """
    if n_sampled_frames >= num_frames:
        return list(range(num_frames))
    step = num_frames / (n_sampled_frames + 1)
    values = np.arange(step, num_frames, step, dtype=np.float32)  # jnp.arange's float32 semantics
    return [int(i) for i in np.minimum(np.round(values), num_frames - 1)]


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    if len(value) != 2:
        raise ConfigError(f"{name}: expected two integers, got {list(value)}")
    return (int(value[0]), int(value[1]))


def _choice(value: str, options: tuple[str, ...], name: str) -> None:
    if value not in options:
        raise ConfigError(f"{name}: unknown value {value!r}; expected one of {list(options)}")

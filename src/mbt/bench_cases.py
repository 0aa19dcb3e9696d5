"""What `mbt bench` can measure: model sizes, fusion variants, modes and precisions.

Plain data, apart from the rig in `mbt.bench` (which imports torch), so that the command
line can offer them as choices without importing torch.
"""

from __future__ import annotations

from typing import Any

SIZES: dict[str, dict[str, Any]] = {
    "paper": {},
    "tiny": {
        "hidden_size": 64, "num_layers": 4, "num_heads": 4, "mlp_dim": 256,
        "image_size": (32, 32), "spectrogram_size": (100, 128),
    },
    "ast": {
        "spectrogram_size": (1024, 128), "spectrogram_patch_stride": (10, 10), "spectrogram_channels": 1,
        "distillation_token": True, "head_norm": True, "gelu": "exact",
    },
}
"""Model sizes, as changes to the default `MBTConfig` (the paper's MBT-B: ViT-B, 8 frames
at 224 = 1,568 rgb tokens, 8 s of audio = 400 spectrogram tokens, 527 classes, token
head). 'tiny' keeps the layout (8 frames, 128 mel bins, 527 classes) at a toy width, for
tests and quick checks. 'ast' is MBT-B with an AST audio tower: 10.24 s cut into 16x16
patches at stride 10 (1,212 tokens) with cls and distillation tokens."""

VARIANTS = ("late", "bottleneck", "vanilla", "early")
"""Fusion variants: late fusion (towers meet in the head), bottleneck fusion from layer
8 of 12, vanilla cross-attention from layer 8, early fusion with one shared encoder."""

VARIANT_FIELDS = ("fusion", "fusion_layer", "share_encoder")
"""The `MBTConfig` fields each variant sets."""
MODES = ("eval", "train")
AMPS = ("off", "bf16", "fp16")

"""Compute of an MBT config, in the paper's convention.

GFLOPs in the paper and in Scenic's `compute_flops` are multiply-adds (XLA's FLOP count
halved): this module counts the multiply-adds of every matmul and convolution of one
clip's forward pass (eval mode), following `MBTConfig.fusion_schedule`, as `MBT.forward` does.
Element-wise work (softmax, GELU, LayerNorm) is left out; against Scenic's measured
numbers (spec §7) that keeps it within 1%.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .config import MBTConfig, fusion_variant


@dataclass
class FlopsReport:
    """Multiply-adds of one forward pass (batch 1), split by where they happen."""

    embedding: int
    encoder: int
    head: int

    @property
    def macs(self) -> int:
        return self.embedding + self.encoder + self.head

    @property
    def gflops(self) -> float:
        """The paper's 'GFLOPs': billions of multiply-adds."""
        return self.macs / 1e9

    @property
    def flops(self) -> int:
        """Floating-point operations (2 per multiply-add)."""
        return 2 * self.macs

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "macs": self.macs, "gflops": significant(self.gflops), "flops": self.flops}


def significant(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits (0.0238 stays 0.0238, 217.23 becomes 217.2)."""
    return float(f"{value:.{digits}g}")


def format_count(value: float, unit: str = "FLOPs", sep: str = "") -> str:
    """A count with the SI prefix that keeps it readable: '217.2 GFLOPs', '23.8 MFLOPs', '950 FLOPs'
    (`sep` goes between prefix and unit)."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {prefix}{sep}{unit}"
    return f"{value:.4g} {unit}"


def block_macs(cfg: MBTConfig, tokens: int) -> int:
    """One encoder block over `tokens` tokens: q/k/v/out projections, the two attention
    matmuls and the MLP."""
    d = cfg.hidden_size
    return tokens * (4 * d * d + 2 * d * cfg.mlp_dim) + 2 * tokens * tokens * d


def count_flops(
    cfg: MBTConfig, modalities: tuple[str, ...] | None = None, train: bool = False
) -> FlopsReport:
    """Multiply-adds of one clip through `cfg` (eval mode unless `train`), with all of
    the config's modalities or the subset given."""
    present = [m for m in cfg.modalities if modalities is None or m in modalities]
    d = cfg.hidden_size
    tokens = {m: cfg.num_tokens(m) for m in present}  # prefix tokens and patches (overlapping ones too)

    embedding = 0
    for m in present:
        channels = cfg.spectrogram_channels if m == "spectrogram" else 3
        kernel = cfg.patch_size[0] * cfg.patch_size[1] * (
            cfg.tubelet_size if m == "rgb" and cfg.temporal_encoding == "3d_conv" else 1)
        embedding += cfg.num_patches(m) * d * channels * kernel

    encoder = 0
    for kind in cfg.fusion_schedule(train):
        if kind == "separate":
            encoder += sum(block_macs(cfg, n) for n in tokens.values())
        elif kind == "bottleneck":
            encoder += sum(block_macs(cfg, n + cfg.num_bottleneck_tokens) for n in tokens.values())
        elif kind == "cross":
            encoder += len(tokens) * block_macs(cfg, sum(tokens.values()))
        else:
            encoder += block_macs(cfg, sum(tokens.values()))

    width = cfg.representation_size or d
    pooled = len(present) if cfg.classifier == "token" else 1
    head = pooled * ((d * cfg.representation_size if cfg.representation_size else 0) + width * cfg.num_classes)
    return FlopsReport(embedding=embedding, encoder=encoder, head=head)


TABLE_ROWS: tuple[tuple[str, str, int | None], ...] = (
    ("audio only", "audio-only", None),
    ("video only", "video-only", None),
    ("late fusion", "late", None),
    ("bottleneck (Lf={})", "bottleneck", None),
    ("bottleneck (Lf={})", "bottleneck", 0),
    ("cross-attention (Lf={})", "vanilla", None),
    ("cross-attention (Lf={})", "vanilla", 0),
    ("early fusion, one encoder (Lf={})", "early", None),
)
"""Rows of `flops_table`: the paper's label, the `FUSION_VARIANTS` entry and its fusion
layer (None: the variant's own)."""


def flops_table(base: MBTConfig | None = None) -> list[dict]:
    """GFLOPs and parameters of each fusion variant at paper size (or of `base`)."""
    import torch

    from .mbt import MBT

    base = base or MBTConfig()
    rows = []
    for label, name, fusion_layer in TABLE_ROWS:
        cfg = fusion_variant(name, base, fusion_layer)
        with torch.device("meta"):
            params = sum(p.numel() for p in MBT(cfg).parameters())
        rows.append(
            {
                "variant": label.format(cfg.fusion_layer),
                "gflops": significant(count_flops(cfg).gflops),
                "params_m": significant(params / 1e6),
            }
        )
    return rows

"""Data: decoding video files, log-mel and Kaldi fbank features, augmentation, annotation formats, datasets."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:  # the lazy exports below, imported statically for type checkers and editors
    from .annotations import (
        AnnotationError as AnnotationError,
        Annotations as Annotations,
        Item as Item,
        load_annotations as load_annotations,
    )
    from .config import DataConfig as DataConfig
    from .dataset import AVDataset as AVDataset, ClipError as ClipError
    from .loader import build_loader as build_loader
    from .shards import (
        ShardConfig as ShardConfig,
        ShardDataset as ShardDataset,
        ShardStream as ShardStream,
        build_stream_loader as build_stream_loader,
        prepare_shards as prepare_shards,
    )

_EXPORTS = {
    "AVDataset": ".dataset",
    "AnnotationError": ".annotations",
    "Annotations": ".annotations",
    "ClipError": ".dataset",
    "DataConfig": ".config",
    "Item": ".annotations",
    "ShardConfig": ".shards",
    "ShardDataset": ".shards",
    "ShardStream": ".shards",
    "build_loader": ".loader",
    "build_stream_loader": ".shards",
    "kaldi_fbank": ".features",
    "load_annotations": ".annotations",
    "prepare_shards": ".shards",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

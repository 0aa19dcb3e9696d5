"""Data: decoding video files, log-mel and Kaldi fbank features, augmentation, annotation formats, datasets."""

from .._lazy import lazy_exports

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

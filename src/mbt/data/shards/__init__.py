"""WebDataset-format shards of pre-decoded clips, for datasets of millions of videos (AudioSet).

`prepare_shards` (`mbt data prepare`) decodes every annotated video once, with `read_clip`'s timing
and padding rules, and writes what the clips of one dataset mode need into plain tar files. The
same dataset interface as `AVDataset` (items of rgb, spectrogram, label, ...) then reads them:

- `ShardDataset`: random access through a per-shard index (byte offset of each sample), from local
  disk or any fsspec URL. What `mbt train` uses with `dataset.format='shards'`: it keeps the
  trainer's sampler, exact resumption and process-count-independent batches.
- `ShardStream`: an `IterableDataset` reading whole shards sequentially (the object-storage access
  pattern), shard order reshuffled every epoch, a shuffle buffer of samples, shards split over
  ranks and loader workers; `build_stream_loader` wraps it in a DataLoader.

Augmentation, log-mel features and SpecAugment stay in the loader, so one set of shards serves any
crop size, augmentation and feature setting; only the fields in `RECIPE_FIELDS` are fixed.

Folder layout (write it on local disk, then copy the folder as is to object storage):

    plan.json            written first: what the run prepares (a re-run resumes a killed run)
    part.json            a part of a run split over machines (`--part K --num-parts N`), written when it
                         finishes, in place of report.json and manifest.json until the parts are merged
    shard-000000.tar     samples, plain POSIX tar (members `{key}.{ext}`, grouped by key)
    shard-000000.json    its index, written once the tar is complete: key, byte offset and length
                         of every sample, labels, ids; bad videos of the shard with the reason
    report.json          written at the end: every video left out, and why
    manifest.json        written last: recipe, classes, shards with sample counts and sizes, counts

Members of sample `{key}` (the item's index in the annotations, 9 digits; no dot, as WebDataset
splits a name at its first dot into key and extension):

    {key}.json           video_id, labels, path, annotation source:line, segment, has_audio, clips
    {key}.c{c}.f{k:05d}.jpg   frame k of clip c, RGB JPEG, short side `min_resize`
    {key}.c{c}.flac      audio of clip c, 16 kHz mono 16-bit FLAC (or `.npy`: raw int16 samples);
                         absent when the video has no audio track (has_audio false)

What a clip stores depends on the mode (`ShardConfig.mode`, times as in `AVDataset`):

- train: the span every training clip can come from. Clip centres are drawn from `[c_min, c_max]`
  (AVDataset's range), so the frames on a grid of `frame_oversample * frame_rate` per second from
  the first frame of the earliest clip to the last frame of the latest, and the audio from
  `c_min - audio_seconds / 2` to `c_max + audio_seconds / 2`. A training item draws its centre as
  AVDataset does, takes the stored frame nearest each of its frame times (at most half a grid step,
  `1 / (2 * frame_oversample * frame_rate)` s, from the time AVDataset would decode) and slices its
  audio window, then augments. Storage grows with `frame_oversample` (more temporal positions).
- val: the one middle clip, exactly the frames and audio AVDataset decodes.
- test: the `num_test_clips` clips, each as in val; the spatial crops are taken at load time.

The clip timing uses the window of the modalities the shards were prepared with (stored in the
manifest), whichever subset of them is read.

Bad videos. Without `skip_bad` the first missing or undecodable video stops `prepare_shards` with
an error naming it; with it such videos are left out, counted, listed with their reason in the
shard index and report.json, and `ShardDataset.dropped` carries them into the trainer's report.
Items without an audio track are counted (`without_audio`) and read back as silence with
`has_audio` False, as AVDataset does.

Audio is stored at 16 bits: on real soundtracks (the three test assets with audio) that changes
the normalised log-mel by 0.0005 on average (0.19 at most); only content below the 16-bit floor
(-96 dBFS, e.g. digital silence plus a pure tone) moves more.

Why plain `tarfile` and not the `webdataset` package: the format is a tar file, a few lines to write
and read; what the package adds (shard lists, shuffling, splitting, decoding) must here follow this
project's rules instead (seeds per (seed, epoch, index), equal whole batches on every rank,
`skip_bad` accounting, count and size checks, random access for the trainer), so it would be a
dependency kept for its tar reader. The layout is the one it reads (keys without dots, a key's
members adjacent, standard extensions), so `webdataset` users can read the shards directly.

Across machines. `prepare_shards(..., part=K, num_parts=N)` (`mbt data prepare --part K --num-parts N`)
writes shards `K::N` of the whole run (items are ordered and cut into shards as for one run, so the
split is deterministic and disjoint) and `part.json` instead of a manifest: a part alone is no shard
folder. `merge_parts` (`mbt data merge PART_DIRS... --out DIR`) checks that all N parts of the same run
are there and finished, links their shards into one folder and writes its report and manifest: the
result equals a run in one go.

Interrupted runs. Each tar is written as `.tmp` and renamed when complete, then its index is
written; a re-run with the same arguments keeps the shards whose index matches the tar on disk and
redoes the others. Readers refuse a folder without manifest.json (an unfinished run), a shard whose
size differs from the manifest, and a tar that ends early or holds fewer samples than listed.

Remote folders (http(s)://, s3://, gs://, ...): reads retry transient errors with backoff and then fail
with `RemoteReadError` naming the URL and the cause, whatever `skip_bad` says (an outage is not a bad
item); HTTP servers without range requests work; sequential reads are read ahead (`remote`, `ReadConfig`).

Modules: `format` (names, recipe, `ShardConfig`), `remote` (URL reads: retries, ranges, read-ahead),
`io` (local or remote reading, `ShardSet`), `webdataset` (standard WebDataset tars of media files and
labels, `dataset.format='webdataset'`), `dataset`
(random access), `stream` (sequential reading and its loader), `writer` (`prepare_shards`).
"""

from .dataset import ShardDataset
from .format import RECIPE_FIELDS, ShardConfig, ShardError
from .io import ShardSet, load_shard_annotations, open_shards
from .remote import ReadConfig, RemoteReadError
from .stream import ShardStream, StreamLoader, build_stream_loader
from .writer import merge_parts, prepare_shards

__all__ = [
    "RECIPE_FIELDS",
    "ReadConfig",
    "RemoteReadError",
    "ShardConfig",
    "ShardDataset",
    "ShardError",
    "ShardSet",
    "ShardStream",
    "StreamLoader",
    "build_stream_loader",
    "load_shard_annotations",
    "merge_parts",
    "open_shards",
    "prepare_shards",
]

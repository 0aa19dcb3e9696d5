"""`prepare_shards` (`mbt data prepare`): decode every annotated video once and write the shard folder,
resuming an interrupted run."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import av
import numpy as np
import torch
from PIL import Image  # torchvision's dependency; torchvision.io's JPEG codec is deprecated (and 14x slower to encode)

from ...io import atomic_write
from ..annotations import Annotations, Item
from ..config import DataConfig
from ..dataset import AVDataset, ClipError
from ..decode import DecodeError, probe, read_audio, read_clip
from ..views import centre_range
from .format import (
    AUDIO_CODECS,
    FORMAT_NAME,
    FORMAT_VERSION,
    KEY_DIGITS,
    MANIFEST,
    MAX_LISTED,
    PART,
    PLAN,
    RECIPE_FIELDS,
    REPORT,
    TIME_EPS,
    ShardConfig,
    ShardError,
    frame_name,
    index_name,
    shard_file_name,
)
from .remote import is_url


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=1).encode()


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _encode_audio(audio: np.ndarray, codec: str, sample_rate: int) -> bytes:
    samples = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    buf = io.BytesIO()
    if codec == "pcm16":
        np.save(buf, samples, allow_pickle=False)
        return buf.getvalue()
    with av.open(buf, "w", format="flac") as c:
        stream = c.add_stream("flac", rate=sample_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts = sample_rate, 0
        for p in [*stream.encode(frame), *stream.encode()]:
            c.mux(p)
    return buf.getvalue()


@dataclass
class _Plan:
    """Everything a prepare run needs to write any shard (sent once to each worker process)."""

    dataset: AVDataset
    shard_cfg: ShardConfig
    out: str
    order: list[int]
    """Item numbers (into dataset.items) in shard order."""
    keys: list[int]
    """Annotation index of each of dataset.items."""
    skip_bad: bool

    @property
    def num_shards(self) -> int:
        return math.ceil(len(self.order) / self.shard_cfg.shard_size)

    def shard_items(self, shard: int) -> list[int]:
        size = self.shard_cfg.shard_size
        return self.order[shard * size: (shard + 1) * size]


def _clips(ds: AVDataset, item: Item, shard_cfg: ShardConfig) -> list[dict[str, Any]]:
    """Frame grid and audio window of each stored clip (module docstring)."""
    cfg = ds.cfg
    n, rate, a = cfg.num_frames, cfg.frame_rate, cfg.audio_seconds
    reach = (n - 1) / (2 * rate)  # frame span either side of a centre
    if shard_cfg.mode == "train":
        start, end = ds.segment(item)
        h = ds.window_seconds / 2
        lo, hi = centre_range(start, end, ds.window_seconds)
        c_min, c_max = max(lo, h), max(hi, h)
        step = 1.0 / (rate * shard_cfg.frame_oversample)
        first = c_min - reach
        count = math.ceil((c_max + reach - first) / step - TIME_EPS) + 1
        return [{"centre_min": c_min, "centre_max": c_max, "frame_start": first, "frame_step": step,
                 "frames": count, "audio_start": max(c_min - a / 2, 0.0), "audio_seconds": c_max - c_min + a}]
    generator = torch.Generator()  # unused outside training
    num_clips = cfg.num_test_clips if shard_cfg.mode == "test" else 1
    clips = []
    for c in range(num_clips):
        centre = ds.clip_centre(item, c * cfg.num_test_crops, generator)
        clips.append({"centre": centre, "frame_start": centre - reach, "frame_step": 1.0 / rate, "frames": n,
                      "audio_start": max(centre - a / 2, 0.0), "audio_seconds": a})
    return clips


def _audio_window(path: str, start: float, seconds: float, cfg: DataConfig) -> tuple[np.ndarray, bool]:
    """Audio of a file read without its frames; silence and False for a file without audio."""
    try:
        return read_audio(path, start, seconds, cfg.sample_rate, cfg.pad_mode)[0], True
    except DecodeError:
        if probe(path).has_audio:
            raise
        return np.zeros(round(seconds * cfg.sample_rate), dtype=np.float32), False


def _encode_item(plan: _Plan, item: Item, key: str, index: int) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """The tar members of one item and its index record."""
    ds, sc, cfg = plan.dataset, plan.shard_cfg, plan.dataset.cfg
    clips = _clips(ds, item, sc)
    members: list[tuple[str, bytes]] = []
    has_audio = True
    frame_size: list[int] | None = None
    for c, clip in enumerate(clips):
        times = [clip["frame_start"] + k * clip["frame_step"] for k in range(clip["frames"])]
        audio_seconds = clip["audio_seconds"] if "spectrogram" in sc.modalities else 0.0
        if "rgb" in sc.modalities:
            decoded = read_clip(item.path, times, clip["audio_start"], audio_seconds, cfg.sample_rate, cfg.pad_mode,
                                resize_short_side=cfg.min_resize)
            audio, has_audio = decoded.audio, decoded.has_audio
            frame_size = list(decoded.rgb.shape[1:3])
            members += [(frame_name(c, k), _encode_jpeg(f, sc.jpeg_quality)) for k, f in enumerate(decoded.rgb)]
        else:
            audio, has_audio = _audio_window(item.path, clip["audio_start"], audio_seconds, cfg)
        clip["audio_samples"] = int(audio.shape[0])
        if has_audio and "spectrogram" in sc.modalities:
            members.append((f"c{c}.{AUDIO_CODECS[sc.audio_codec]}", _encode_audio(audio, sc.audio_codec,
                                                                                   cfg.sample_rate)))
    start, end = ds.segment(item)
    meta = {"key": key, "index": index, "video_id": item.video_id, "labels": list(item.labels), "path": item.path,
            "source": item.source, "line": item.line, "start": start, "end": end, "has_audio": has_audio,
            "frame_size": frame_size, "clips": clips}
    return [("json", _json_bytes(meta)), *members], meta


def _write_shard(plan: _Plan, shard: int) -> dict[str, Any]:
    """Write shard `shard` (atomically: the tar, then its index); returns the index."""
    name = shard_file_name(shard)
    path = os.path.join(plan.out, name)
    records: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    size = 0

    def write(f: BinaryIO) -> None:
        nonlocal size
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for i in plan.shard_items(shard):
                item, index = plan.dataset.items[i], plan.keys[i]
                key = f"{index:0{KEY_DIGITS}d}"
                try:
                    members, meta = _encode_item(plan, item, key, index)
                except (DecodeError, OSError) as e:
                    reason = f"{type(e).__name__}: {e}"
                    if not plan.skip_bad:
                        raise ClipError(f"{item.path} (annotation {item.source}:{item.line}): cannot read the clip: "
                                        f"{reason} (pass --skip-bad to leave such videos out, counted in the "
                                        "report)") from e
                    bad.append({"index": index, "path": item.path, "source": item.source, "line": item.line,
                                "reason": reason})
                    continue
                offset = f.tell()
                for ext, data in members:
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))
                records.append({"key": key, "index": index, "offset": offset, "size": f.tell() - offset,
                                **{k: meta[k] for k in ("video_id", "labels", "path", "source", "line", "start",
                                                        "end", "has_audio")}})
        size = f.tell()

    atomic_write(path, write)  # a killed run leaves no partial shard under the shard's name
    index = {"shard": name, "bytes": size, "samples": records, "bad": bad}
    atomic_write(os.path.join(plan.out, index_name(name)), _json_bytes(index))
    return index


_WORKER_PLAN: _Plan | None = None


def _init_worker(plan: _Plan) -> None:
    global _WORKER_PLAN
    _WORKER_PLAN = plan
    torch.set_num_threads(1)


def _write_shard_in_worker(shard: int) -> dict[str, Any]:
    assert _WORKER_PLAN is not None
    return _write_shard(_WORKER_PLAN, shard)


def _finished_index(out: str, shard: int) -> dict[str, Any] | None:
    """The index of a completely written shard, or None (missing, or its tar does not match)."""
    name = shard_file_name(shard)
    try:
        with open(os.path.join(out, index_name(name))) as f:
            index = json.load(f)
        return index if os.path.getsize(os.path.join(out, name)) == index["bytes"] else None
    except (OSError, ValueError, KeyError):
        return None


def _plan_record(plan: _Plan, annotations: Annotations) -> dict[str, Any]:
    """What identifies a run, to resume only the same one."""
    digest = hashlib.sha256()
    for i in plan.order:
        it = plan.dataset.items[i]
        digest.update(repr((plan.keys[i], it.path, it.labels, it.start, it.end, it.video_id)).encode())
    record = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "storage": dataclasses.asdict(plan.shard_cfg),
              "recipe": _recipe(plan.dataset.cfg, plan.shard_cfg.mode), "classes": annotations.class_names,
              "items": len(plan.order), "items_sha256": digest.hexdigest()}
    return json.loads(json.dumps(record))  # as read back from plan.json (tuples -> lists)


def _recipe(cfg: DataConfig, mode: str) -> dict[str, Any]:
    recipe = {name: getattr(cfg, name) for name in RECIPE_FIELDS}
    if mode == "test":
        recipe["num_test_clips"] = cfg.num_test_clips
    return recipe


def _clear(out: str) -> None:
    """Remove what a prepare run writes (and nothing else) from `out`."""
    for name in os.listdir(out):
        temporary = re.fullmatch(r"\.(.+)\.\d+\.tmp", name)  # left by a killed atomic_write
        base = temporary.group(1) if temporary else name
        ours = base in (MANIFEST, PLAN, REPORT, PART) or (base.startswith("shard-") and
                                                     base.endswith((".tar", ".json", ".tmp")))
        if ours or name in (MANIFEST + ".tmp", PLAN + ".tmp", REPORT + ".tmp", PART + ".tmp"):
            os.remove(os.path.join(out, name))


def prepare_shards(
    annotations: Annotations,
    cfg: DataConfig,
    out: str | os.PathLike[str],
    shard_cfg: ShardConfig | None = None,
    *,
    workers: int = 1,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    part: int = 0,
    num_parts: int = 1,
) -> dict[str, Any]:
    """Write `annotations` as shards into the local folder `out` (module docstring); returns the
    report (counts, videos left out). Re-running on a folder an interrupted run left resumes it.
    `progress(done, total)` is called after each shard.

    Across machines: with `num_parts` > 1 this run writes only part `part` (0-based) of the shards,
    shards `part::num_parts` of the whole run's (same numbers, same bytes), and `part.json` instead of
    a manifest; `merge_parts` then makes the finished folder, equal to a run in one go."""
    sc = shard_cfg or ShardConfig()
    out = os.fspath(out)
    if not 0 <= part < num_parts:
        raise ValueError(f"part {part} must be in 0 .. num_parts - 1 = {num_parts - 1}")
    if is_url(out):
        raise ValueError(f"{out}: write shards to a local folder, then copy it to object storage")
    os.makedirs(out, exist_ok=True)
    finished = [n for n in (MANIFEST, PART) if os.path.exists(os.path.join(out, n))]
    if finished:
        if not overwrite:
            raise FileExistsError(f"{out}: already holds finished shards ({finished[0]}); choose another folder or "
                                  "pass --overwrite")
        _clear(out)
    tic = time.perf_counter()
    ds = AVDataset(annotations, cfg, sc.mode, modalities=sc.modalities, skip_bad=skip_bad)  # raises on missing files
    position = {id(it): k for k, it in enumerate(annotations.items)}
    keys = [position[id(it)] for it in ds.items]
    order = np.random.default_rng(sc.seed).permutation(len(ds.items)).tolist()
    plan = _Plan(ds, sc, out, order, keys, skip_bad)
    record = _plan_record(plan, annotations)
    if num_parts > 1:
        record["part"] = {"index": part, "count": num_parts}
    plan_path = os.path.join(out, PLAN)
    resumed = os.path.exists(plan_path)
    if resumed:
        with open(plan_path) as f:
            previous = json.load(f)
        changed = sorted(k for k in set(record) | set(previous) if record.get(k) != previous.get(k))
        if changed:
            raise ValueError(f"{out}: holds an unfinished run of different shards ({', '.join(changed)} differ); "
                             "run the same command to finish it, or pass --overwrite to start over")
    else:
        _clear(out)
        atomic_write(plan_path, _json_bytes(record))
    for name in os.listdir(out):
        if name.endswith(".tmp"):
            os.remove(os.path.join(out, name))
    mine = list(range(part, plan.num_shards, num_parts))
    indexes: dict[int, dict[str, Any]] = {}
    for shard in mine:
        index = _finished_index(out, shard)
        if index is not None:
            indexes[shard] = index
    kept = len(indexes)
    todo = [s for s in mine if s not in indexes]
    if progress:
        progress(kept, len(mine))
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        with multiprocessing.get_context().Pool(min(workers, len(todo)), _init_worker, (plan,)) as pool:
            for index in pool.imap_unordered(_write_shard_in_worker, todo):
                indexes[int(index["shard"][6:12])] = index
                if progress:
                    progress(len(indexes), len(mine))
    else:
        for shard in todo:
            indexes[shard] = _write_shard(plan, shard)
            if progress:
                progress(len(indexes), len(mine))

    header = _header(plan, annotations)
    if num_parts > 1:
        atomic_write(os.path.join(out, PART), _json_bytes({
            "part": part, "num_parts": num_parts, "num_shards": plan.num_shards, "shards": mine,
            "plan": record, "header": header}))
        shards = [indexes[s] for s in mine]
        written = sum(len(s["samples"]) for s in shards)
        return {"out": out, "mode": sc.mode, "part": part, "num_parts": num_parts, "items": len(order),
                "written": written, "shards": len(mine), "shards_kept_from_interrupted_run": kept if resumed else 0,
                "bytes": sum(s["bytes"] for s in shards), "seconds": time.perf_counter() - tic,
                "left_out": sum(len(s["bad"]) for s in shards)}
    report = _finish(out, header, [indexes[s] for s in range(plan.num_shards)], tic)
    report["shards_kept_from_interrupted_run"] = kept if resumed else 0
    return report


def _header(plan: _Plan, annotations: Annotations) -> dict[str, Any]:
    """What the manifest and report take from the annotations and the run, besides the shards."""
    ds, sc = plan.dataset, plan.shard_cfg
    return json.loads(json.dumps({
        "mode": sc.mode,
        "modalities": list(sc.modalities),
        "recipe": _recipe(ds.cfg, sc.mode),
        "window_seconds": ds.window_seconds,
        "storage": {k: v for k, v in dataclasses.asdict(sc).items() if k not in ("mode", "modalities")},
        "classes": {"names": annotations.class_names, "multi_label": annotations.multi_label,
                    "class_splits": list(annotations.class_splits), "split_names": list(annotations.split_names)},
        "annotations": {"format": annotations.format, "sources": list(annotations.sources)},
        "items": len(annotations.items),
        "missing": [{"path": path, "source": "", "line": 0, "reason": reason} for path, reason in ds.dropped],
        "annotation_rows_skipped": [list(p) for p in annotations.problems],
    }))


def _finish(out: str, header: dict[str, Any], shards: list[dict[str, Any]], tic: float) -> dict[str, Any]:
    """Write report.json and, last, manifest.json of a folder whose shards (their indexes) are all
    written; returns the report."""
    left_out = header["missing"] + [b for s in shards for b in s["bad"]]
    written = sum(len(s["samples"]) for s in shards)
    report = {
        "out": out,
        "mode": header["mode"],
        "items": header["items"],
        "written": written,
        "left_out": len(left_out),
        "missing_files": len(header["missing"]),
        "unreadable": len(left_out) - len(header["missing"]),
        "without_audio": sum(1 for s in shards for r in s["samples"] if not r["has_audio"]),
        "annotation_rows_skipped": len(header["annotation_rows_skipped"]),
        "shards": len(shards),
        "shards_kept_from_interrupted_run": 0,
        "bytes": sum(s["bytes"] for s in shards),
        "seconds": time.perf_counter() - tic,
        "first_left_out": [f"{b['path']}: {b['reason']}" for b in left_out[:MAX_LISTED]],
    }
    atomic_write(os.path.join(out, REPORT), _json_bytes({
        "left_out": left_out,
        "annotation_rows_skipped": header["annotation_rows_skipped"],
    }))
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        **{k: header[k] for k in ("mode", "modalities", "recipe", "window_seconds", "storage", "classes",
                                  "annotations")},
        "shards": [{"name": s["shard"], "samples": len(s["samples"]), "bytes": s["bytes"]} for s in shards],
        "report": {k: v for k, v in report.items()
                   if k not in ("out", "seconds", "first_left_out", "shards_kept_from_interrupted_run")},
    }
    atomic_write(os.path.join(out, MANIFEST), _json_bytes(manifest))
    return report


def merge_parts(parts: list[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                overwrite: bool = False) -> dict[str, Any]:
    """One finished shard folder `out` from the part folders of a preparation split over machines
    (`prepare_shards(..., part=K, num_parts=N)`): every part of the same run present once, finished,
    each shard's tar matching its index; the shards are hard-linked (copied across filesystems). The
    result equals a run in one go (same shards, index, report and manifest)."""
    tic = time.perf_counter()
    out = os.fspath(out)
    if is_url(out):
        raise ValueError(f"{out}: merge into a local folder, then copy it to object storage")
    infos: dict[int, tuple[str, dict[str, Any]]] = {}
    for folder in map(os.fspath, parts):
        path = os.path.join(folder, PART)
        if not os.path.exists(path):
            hint = (" (its run has not finished: run the same `mbt data prepare --part` command again)"
                    if os.path.exists(os.path.join(folder, PLAN)) else " (not a part folder of `mbt data prepare "
                                                                        "--part K --num-parts N`)")
            raise ShardError(f"{folder}: no {PART}{hint}")
        with open(path) as f:
            info = json.load(f)
        if info["part"] in infos:
            raise ValueError(f"{folder}: part {info['part']} given twice (also {infos[info['part']][0]})")
        infos[info["part"]] = (folder, info)
    first_folder, first = next(iter(infos.values()))
    for folder, info in infos.values():
        plan = {k: v for k, v in info["plan"].items() if k != "part"}
        reference = {k: v for k, v in first["plan"].items() if k != "part"}
        changed = sorted(k for k in set(plan) | set(reference) if plan.get(k) != reference.get(k))
        if changed or info["num_parts"] != first["num_parts"] or info["header"] != first["header"]:
            what = ", ".join(changed) or "num_parts or annotations"
            raise ValueError(f"{folder}: a part of a different preparation than {first_folder} ({what} differ): "
                             "every part must run the same command on the same annotations and media")
    missing = sorted(set(range(first["num_parts"])) - set(infos))
    if missing:
        raise ValueError(f"parts {missing} of {first['num_parts']} not given (have {sorted(infos)})")
    os.makedirs(out, exist_ok=True)
    inside = [folder for folder, _ in infos.values() if os.path.samefile(folder, out)]
    if inside:
        raise ValueError(f"{out}: is the part folder {inside[0]}; merge into a new folder")
    if os.path.exists(os.path.join(out, MANIFEST)):
        if not overwrite:
            raise FileExistsError(f"{out}: already holds finished shards ({MANIFEST}); choose another folder or "
                                  "pass --overwrite")
        _clear(out)
    owner = {s: folder for folder, info in infos.values() for s in info["shards"]}
    indexes = []
    for shard in range(first["num_shards"]):
        index = _finished_index(owner[shard], shard)
        if index is None:
            raise ShardError(f"{os.path.join(owner[shard], shard_file_name(shard))}: missing, or its size differs from "
                             "its index: the part's files were changed after it finished; prepare that part again")
        for name in (shard_file_name(shard), index_name(shard_file_name(shard))):
            _link_or_copy(os.path.join(owner[shard], name), os.path.join(out, name))
        indexes.append(index)
    atomic_write(os.path.join(out, PLAN), _json_bytes({k: v for k, v in first["plan"].items() if k != "part"}))
    report = _finish(out, first["header"], indexes, tic)
    report["parts"] = len(infos)
    return report


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)

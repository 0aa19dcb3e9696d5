"""Shards (`mbt data prepare`, ShardDataset, ShardStream) on small generated H.264 + AAC videos."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tarfile
from pathlib import Path

import av
import fsspec
import numpy as np
import pytest
import torch

from mbt.cli import main
from mbt.data.annotations import AnnotationError, Item, parse_folder
from mbt.data.config import DataConfig
from mbt.data.dataset import AVDataset, ClipError
from mbt.data.decode import read_clip
from mbt.data.shards import (
    ShardConfig,
    ShardDataset,
    ShardError,
    ShardStream,
    build_stream_loader,
    load_shard_annotations,
    open_shards,
    prepare_shards,
)

from .tiny_experiment import tiny_config, write_config

FPS, SECONDS, SR = 25, 3.0, 16000
CFG = DataConfig(num_frames=4, frame_rate=4.0, image_size=32, min_resize=40, audio_seconds=2.0, num_mel_bins=32,
                 freq_mask_max_bins=8, num_test_clips=2)
VIDEOS = [("dog/d1.mp4", 440.0), ("dog/d2.mp4", 880.0), ("dog/d3_silent.mp4", None), ("cat/c1.mp4", 220.0),
          ("cat/c2.mp4", 1760.0)]


def write_video(path: Path, freq: float | None) -> None:
    """64x48 H.264: frame k has red level 255 k / (n - 1), a green bar growing from the left and a
    blue gradient across; a mono 16 kHz AAC tone of `freq` Hz over a -50 dBFS noise floor (a real
    recording's), or no audio track for None."""
    w, h, n = 64, 48, round(SECONDS * FPS)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        if freq is not None:
            ast = c.add_stream("aac", rate=SR)
            ast.layout = "mono"
        for k in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = round(255 * k / (n - 1))
            img[:, : (k * w) // n, 1] = 200
            img[..., 2] = np.linspace(0, 255, w).astype(np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if freq is not None:
            t = np.arange(int(SECONDS * SR)) / SR
            noise = np.random.default_rng(int(freq)).standard_normal(t.shape) * 10 ** (-50 / 20)
            wav = (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)
            for k in range(0, len(wav), 1024):
                frame = av.AudioFrame.from_ndarray(wav[None, k: k + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = SR, k
                for p in ast.encode(frame):
                    c.mux(p)
            for p in ast.encode():
                c.mux(p)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    for name, freq in VIDEOS:
        (root / name).parent.mkdir(exist_ok=True)
        write_video(root / name, freq)
    return root


@pytest.fixture(scope="module")
def shards(media, tmp_path_factory) -> dict[str, Path]:
    """Train, val and test shard folders of the 5 videos, 2 samples per shard (3 shards)."""
    out = tmp_path_factory.mktemp("shards")
    ann = parse_folder(media)
    folders = {}
    for mode in ("train", "val", "test"):
        folders[mode] = out / mode
        report = prepare_shards(ann, CFG, folders[mode], ShardConfig(mode=mode, shard_size=2))
        assert (report["written"], report["shards"], report["left_out"], report["without_audio"]) == (5, 3, 0, 1)
    return folders


def _close(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a - b).abs()
    return float(d.mean()), float(d.max())


# ---------------------------------------------------------------------- round trip
@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_items_equal_items_decoded_from_the_videos(media, shards, split):
    cfg = dataclasses.replace(CFG, num_test_crops=3)  # crops are taken at load time: not fixed by the shards
    ann = parse_folder(media)
    direct, stored = AVDataset(ann, cfg, split), ShardDataset(shards[split], cfg, split)
    assert len(direct) == len(stored) == 5 * (6 if split == "test" else 1)
    for i in range(len(direct)):
        x, y = direct[i], stored[i]
        for key in ("label_index", "video_id", "clip_index", "index", "has_audio"):
            assert x[key] == y[key], key
        assert torch.equal(x["label"], y["label"])
        assert x["rgb"].shape == y["rgb"].shape == (4, 3, 32, 32)
        mean, worst = _close(x["rgb"], y["rgb"])
        assert mean < 0.02 and worst < 0.25  # JPEG q90 ([-1, 1] scale: 0.02 is 2.5 grey levels)
        mean, worst = _close(x["spectrogram"], y["spectrogram"])
        assert mean < 0.01 and worst < 0.5  # 16-bit audio (normalised log-mel units)
        if not x["has_audio"]:
            assert torch.equal(x["spectrogram"], y["spectrogram"])


def test_stored_audio_is_the_decoded_audio_to_half_a_16_bit_step(media, shards):
    """The val clip's stored FLAC holds exactly read_clip's window, rounded to 16 bits."""
    ds = ShardDataset(shards["val"], CFG, "val")
    index = {r["video_id"]: r for r in ds.shards.index()}
    record = index["dog/d1"]
    url = ds.shards.urls[record["shard"]]
    with tarfile.open(url) as tar:
        meta = json.loads(tar.extractfile(f"{record['key']}.json").read())
        flac = tar.extractfile(f"{record['key']}.c0.flac").read()
    with av.open(__import__("io").BytesIO(flac)) as c:
        stored = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]) / 32768.0
    clip = meta["clips"][0]
    times = [clip["frame_start"] + k * clip["frame_step"] for k in range(clip["frames"])]
    decoded = read_clip(media / "dog/d1.mp4", times, clip["audio_start"], CFG.audio_seconds, SR)
    assert stored.shape == decoded.audio.shape == (round(CFG.audio_seconds * SR),)
    assert np.abs(stored - decoded.audio).max() <= 0.5 / 32768 + 1e-7


def test_train_items_follow_the_same_draws_as_the_videos(media, shards):
    """Same seed, epoch and index: the same clip centre, crop, flip, colour and SpecAugment draws.
    Frames differ only by JPEG and by taking the stored frame nearest each frame time."""
    ann = parse_folder(media)
    direct, stored = AVDataset(ann, CFG, "train", seed=5), ShardDataset(shards["train"], CFG, "train", seed=5)
    same, other = [], []
    for i in range(len(direct)):
        x, y = direct[(1, i)], stored[(1, i)]
        assert x["video_id"] == y["video_id"] and x["has_audio"] == y["has_audio"]
        same.append(_close(x["rgb"], y["rgb"])[0])
        other.append(_close(x["rgb"], stored[(2, i)]["rgb"])[0])  # another epoch: other draws
        mean, _ = _close(x["spectrogram"], y["spectrogram"])
        assert mean < 0.02
    assert max(same) < 0.06 and min(other) > 3 * max(same)
    assert not torch.equal(stored[(1, 0)]["rgb"], stored[(2, 0)]["rgb"])
    assert torch.equal(stored[(1, 0)]["rgb"], stored[(1, 0)]["rgb"])  # seeded: repeatable


def test_train_shard_stores_the_span_of_every_training_clip(shards):
    ds = ShardDataset(shards["train"], CFG, "train")
    grid = 1 / (CFG.frame_rate * 2)
    for record in ds.shards.index():
        url = ds.shards.urls[record["shard"]]
        with tarfile.open(url) as tar:
            meta = json.loads(tar.extractfile(f"{record['key']}.json").read())
            names = tar.getnames()
        clip = meta["clips"][0]
        h = max(CFG.clip_seconds, CFG.audio_seconds) / 2  # the window of both modalities
        assert (clip["centre_min"], clip["centre_max"]) == pytest.approx((h, SECONDS - h))
        assert clip["frame_step"] == pytest.approx(grid)
        last = clip["frame_start"] + (clip["frames"] - 1) * grid
        assert clip["frame_start"] == pytest.approx(h - 1.5 / CFG.frame_rate)
        assert last >= SECONDS - h + 1.5 / CFG.frame_rate - 1e-6
        assert clip["audio_start"] == pytest.approx(0.0) and clip["audio_seconds"] == pytest.approx(SECONDS)
        jpgs = [n for n in names if n.startswith(record["key"]) and n.endswith(".jpg")]
        assert len(jpgs) == clip["frames"]


def test_shards_are_webdataset_tars(shards):
    """Plain tar, members `{key}.{ext}` with keys free of dots and each key's members together."""
    seen: list[str] = []
    for url in open_shards(shards["test"]).urls:
        with tarfile.open(url) as tar:
            for name in tar.getnames():
                key, _, ext = name.partition(".")
                assert key.isdigit() and ext
                if not seen or seen[-1] != key:
                    assert key not in seen  # grouped
                    seen.append(key)
                members = tar.getnames()
            for key in {n.partition(".")[0] for n in members}:
                exts = sorted(n.partition(".")[2] for n in members if n.startswith(key + "."))
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                want = ["json"] + [f"c{c}.f{k:05d}.jpg" for c in range(2) for k in range(4)]
                want += [f"c{c}.flac" for c in range(2)] if meta["has_audio"] else []
                assert exts == sorted(want)
    assert len(seen) == 5


# ---------------------------------------------------------------------- streaming
def _indices(loader, epoch: int) -> list[int]:
    loader.set_epoch(epoch)
    return [i for batch in loader for i in batch["index"].tolist()]


def test_stream_items_equal_random_access_items(shards):
    for split in ("train", "test"):
        dataset = ShardDataset(shards[split], CFG, split, seed=3)
        stream = ShardStream(shards[split], CFG, split, seed=3)
        stream.set_epoch(2)
        for item in stream:
            other = dataset[(2, item["index"])]
            assert item["video_id"] == other["video_id"] and item["clip_index"] == other["clip_index"]
            assert torch.equal(item["rgb"], other["rgb"]) and torch.equal(item["spectrogram"], other["spectrogram"])


def test_stream_covers_every_sample_once_per_epoch_over_workers_and_ranks(shards):
    stream = ShardStream(shards["train"], CFG, "train", modalities=("spectrogram",), seed=1)
    loader = build_stream_loader(stream, batch_size=1, num_workers=2)
    orders = [_indices(loader, epoch) for epoch in range(3)]
    for order in orders:
        assert sorted(order) == list(range(5))
    assert len({tuple(o) for o in orders}) == 3  # reshuffled every epoch
    assert _indices(loader, 1) == orders[1]  # deterministic for a given epoch and worker count

    # evaluation: every view exactly once over 2 ranks x 2 workers, with partial batches
    seen = []
    for rank in range(2):
        test = ShardStream(shards["test"], CFG, "test", modalities=("spectrogram",), rank=rank, world_size=2)
        loader = build_stream_loader(test, batch_size=3, num_workers=2)
        got = _indices(loader, 0)
        assert len(got) == sum(test.shards.counts[s] for w in test.assignment(0)[rank] for s in w) * 2
        seen += got
    assert sorted(seen) == list(range(10))

    # training on 2 ranks: equal numbers of whole batches, disjoint, the rest counted as dropped
    for epoch in range(3):
        per_rank = []
        for rank in range(2):
            train = ShardStream(shards["train"], CFG, "train", modalities=("spectrogram",), rank=rank,
                                world_size=2, seed=1)
            loader = build_stream_loader(train, batch_size=1, num_workers=1)
            per_rank.append(_indices(loader, epoch))
            assert len(loader) == len(per_rank[-1])
        assert len(per_rank[0]) == len(per_rank[1]) > 0
        assert not set(per_rank[0]) & set(per_rank[1])
        assert 5 - 2 * len(per_rank[0]) == train.dropped_in_epoch(epoch)


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
def test_stream_resumes_mid_epoch_in_the_same_order(shards):
    """`start_unit` continues an epoch exactly where a run stopped, over workers that hold
    unequal numbers of samples (the loader takes from them in turn)."""
    for workers, batch in ((0, 1), (2, 1), (2, 2), (3, 1)):
        stream = ShardStream(shards["train"], CFG, "train", modalities=("spectrogram",), seed=4)
        loader = build_stream_loader(stream, batch_size=batch, num_workers=workers)
        full = [b["index"].tolist() for b in (loader.set_epoch(1), loader)[1]]
        seen = [i for b in full for i in b]
        assert len(set(seen)) == len(seen) == 5 - stream.dropped_in_epoch(1) and set(seen) <= set(range(5))
        for start in range(1, len(full)):
            stream.start_unit = start
            assert [b["index"].tolist() for b in loader] == full[start:], (workers, batch, start)
        stream.start_unit = 0
    assert stream.worker_starts(1, 3) == ([1, 1, 1], 0)
    with pytest.raises(ValueError, match="outside"):
        stream.worker_starts(1, 6)


def test_shuffle_buffer_mixes_samples_across_shards(shards):
    def orders(buffer: int) -> list[list[int]]:
        stream = ShardStream(shards["train"], CFG, "train", modalities=("spectrogram",), shuffle_buffer=buffer)
        shard_of = {r["index"]: r["shard"] for r in stream.shards.index()}
        out = []
        for epoch in range(6):
            stream.set_epoch(epoch)
            out.append([shard_of[item["index"]] for item in stream])
        return out

    def contiguous(order: list[int]) -> bool:  # each shard's samples in one run
        runs = [s for k, s in enumerate(order) if k == 0 or order[k - 1] != s]
        return len(runs) == len(set(runs))

    assert all(contiguous(o) for o in orders(0))
    assert not all(contiguous(o) for o in orders(8))


def test_fsspec_urls(shards, tmp_path):
    """file:// and memory:// URLs read the same items as the local folder."""
    local = ShardDataset(shards["val"], CFG, "val")
    via_file = ShardDataset("file://" + str(shards["val"]), CFG, "val")
    memory = fsspec.filesystem("memory")
    for name in os.listdir(shards["val"]):
        memory.pipe_file(f"/val/{name}", (shards["val"] / name).read_bytes())
    stream = ShardStream("memory://val", CFG, "val")
    streamed = {item["index"]: item for item in stream}
    for i in range(len(local)):
        assert torch.equal(local[i]["rgb"], via_file[i]["rgb"])
        assert torch.equal(local[i]["rgb"], streamed[i]["rgb"])
        assert torch.equal(local[i]["spectrogram"], streamed[i]["spectrogram"])
    memory.rm("/val", recursive=True)


# ---------------------------------------------------------------------- integrity
def test_truncated_shards_are_detected(shards, tmp_path):
    folder = tmp_path / "val"
    shutil.copytree(shards["val"], folder)
    first = open_shards(folder)
    records = [r for r in first.index() if r["shard"] == 0]
    tar = Path(first.urls[0])
    data = tar.read_bytes()

    tar.write_bytes(data[: records[1]["offset"] + 700])  # cut inside the second sample
    dataset = ShardDataset(folder, CFG, "val")
    index = next(i for i, it in enumerate(dataset.items) if it.extra["shard"][0] == 0)
    with pytest.raises(ClipError, match=r"shard-000000\.tar: .*partially written"):
        dataset[index]
    with pytest.raises(ShardError, match=r"shard-000000\.tar: truncated or corrupt after 1 samples"):
        list(ShardStream(folder, CFG, "val"))

    tar.write_bytes(data[: records[1]["offset"]])  # a clean cut after the first sample
    with pytest.raises(ShardError, match=r"shard-000000\.tar: 1 samples, the manifest lists 2"):
        list(ShardStream(folder, CFG, "val"))


@pytest.mark.parametrize("name", ["../outside.tar", "OUTSIDE", "file:///outside.tar", "sub/../../outside.tar",
                                  "..\\outside.tar", 3])
def test_manifest_names_outside_the_shard_folder_are_refused(shards, tmp_path, name):
    folder = tmp_path / "val"
    shutil.copytree(shards["val"], folder)
    outside = tmp_path / "outside.tar"  # a readable tar outside the folder the manifest must not reach
    shutil.copy(folder / "shard-000000.tar", outside)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["shards"][0]["name"] = str(outside) if name == "OUTSIDE" else name
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"manifest\.json: shard name .* is not a plain \.tar file name"):
        open_shards(folder)


def test_interrupted_prepare_is_detected_and_resumed(media, shards, tmp_path):
    folder = tmp_path / "val"
    shutil.copytree(shards["val"], folder)
    # the state a killed run leaves: no manifest/report, the last shard half written, its index missing
    for name in ("manifest.json", "report.json", "shard-000002.json"):
        (folder / name).unlink()
    original = (folder / "shard-000002.tar").read_bytes()
    (folder / "shard-000002.tar").unlink()
    (folder / "shard-000002.tar.tmp").write_bytes(original[:1000])
    with pytest.raises(ShardError, match="did not finish"):
        ShardDataset(folder, CFG, "val")
    with pytest.raises(ShardError, match="did not finish"):
        ShardStream(folder, CFG, "val")

    ann = parse_folder(media)
    with pytest.raises(ValueError, match="unfinished run of different shards.*storage"):
        prepare_shards(ann, CFG, folder, ShardConfig(mode="val", shard_size=2, jpeg_quality=80))
    report = prepare_shards(ann, CFG, folder, ShardConfig(mode="val", shard_size=2))
    assert report["shards_kept_from_interrupted_run"] == 2 and report["written"] == 5
    assert (folder / "shard-000002.tar").read_bytes() == original  # deterministic bytes
    assert not list(folder.glob("*.tmp"))
    assert len(ShardDataset(folder, CFG, "val")) == 5
    with pytest.raises(FileExistsError, match="already holds finished shards"):
        prepare_shards(ann, CFG, folder, ShardConfig(mode="val", shard_size=2))


def test_recipe_split_and_modalities_are_checked(shards):
    for cfg, message in [
        (dataclasses.replace(CFG, frame_rate=3.125), "data.frame_rate=3.125 differs"),
        (dataclasses.replace(CFG, audio_seconds=1.0), "data.audio_seconds=1.0 differs"),
        (dataclasses.replace(CFG, min_resize=64), "smaller than data.min_resize=64"),
    ]:
        with pytest.raises(ValueError, match=message):
            ShardDataset(shards["val"], cfg, "val")
    with pytest.raises(ValueError, match="data.num_test_clips=4 differs"):
        ShardDataset(shards["test"], dataclasses.replace(CFG, num_test_clips=4), "test")
    with pytest.raises(ValueError, match="prepared for the 'val' split, cannot serve 'train'"):
        ShardStream(shards["val"], CFG, "train")
    smaller = dataclasses.replace(CFG, min_resize=36, image_size=32)  # stored frames larger: fine
    assert ShardDataset(shards["val"], smaller, "val")[0]["rgb"].shape == (4, 3, 32, 32)


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_parts_on_several_machines_merge_into_the_whole_run(with_bad, tmp_path, capsys):
    """`prepare --part K --num-parts 2` twice, then `merge`: the folder a run in one go writes (same
    shards byte for byte, index, report and manifest), bad videos counted once, wherever they fell."""
    args = ["data", "prepare", str(with_bad), "--format", "folder", "--mode", "train", "--skip-bad",
            "--set", "data.num_frames=4", "data.frame_rate=4.0", "data.min_resize=40", "data.audio_seconds=2.0",
            "--shard-size", "2", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    for k in (0, 1):
        assert main([*args, "--out", str(tmp_path / f"part{k}"), "--part", str(k), "--num-parts", "2"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "part1").glob("*.tar")) == ["shard-000001.tar"]  # 3 shards: 0, 2 | 1
    with pytest.raises(ShardError, match="a part of a preparation split over machines.*mbt data merge"):
        ShardDataset(tmp_path / "part0", CFG, "train")  # a part alone is not the data set
    merge = ["data", "merge", str(tmp_path / "part1"), str(tmp_path / "part0"), "--out", str(tmp_path / "merged")]
    assert main([*merge[:3], *merge[4:]]) == 1
    assert "parts [0] of 2 not given" in capsys.readouterr().err
    assert main([*merge[:4], "--out", str(tmp_path / "part0")]) == 1  # never into a part (it would lose files)
    assert "is the part folder" in capsys.readouterr().err and (tmp_path / "part0" / "shard-000000.tar").exists()
    assert main(merge) == 0
    assert "5 of 6 items in 3 shards" in capsys.readouterr().out

    whole, merged = _folder_files(tmp_path / "whole"), _folder_files(tmp_path / "merged")
    assert sorted(whole) == sorted(merged)
    for name in whole:
        if name != "manifest.json":
            assert merged[name] == whole[name], name
    manifest = json.loads(merged["manifest.json"])
    assert manifest == json.loads(whole["manifest.json"])
    assert manifest["report"]["unreadable"] == 1 and sum(s["samples"] for s in manifest["shards"]) == 5
    a, b = ShardDataset(tmp_path / "whole", CFG, "train"), ShardDataset(tmp_path / "merged", CFG, "train")
    assert [it.extra for it in a.items] == [it.extra for it in b.items] and len(a.dropped) == len(b.dropped) == 1
    assert torch.equal(a[3]["rgb"], b[3]["rgb"])

    # parts of different runs are refused
    assert main([*args, "--out", str(tmp_path / "other1"), "--part", "1", "--num-parts", "2",
                 "--jpeg-quality", "80"]) == 0
    capsys.readouterr()
    assert main(["data", "merge", str(tmp_path / "part0"), str(tmp_path / "other1"), "--out",
                 str(tmp_path / "m2")]) == 1
    assert "a part of a different preparation" in capsys.readouterr().err


# ---------------------------------------------------------------------- bad videos
@pytest.fixture()
def with_bad(media, tmp_path) -> Path:
    root = tmp_path / "with_bad"
    for name, _ in VIDEOS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(media / name)
    (root / "cat" / "broken.mp4").write_bytes((media / "cat/c1.mp4").read_bytes()[:400])
    return root


def test_bad_and_missing_videos_stop_or_are_counted(with_bad, tmp_path):
    ann = parse_folder(with_bad)
    ann.items.append(Item(path=str(with_bad / "cat" / "gone.mp4"), labels=(0,), video_id="cat/gone", found=False))
    with pytest.raises(AnnotationError, match="1 of 7 media files are missing"):
        prepare_shards(ann, CFG, tmp_path / "a", ShardConfig(mode="val"))
    present = dataclasses.replace(ann, items=ann.items[:-1])
    with pytest.raises(ClipError, match=r"broken\.mp4.*--skip-bad"):
        prepare_shards(present, CFG, tmp_path / "b", ShardConfig(mode="val"))

    report = prepare_shards(ann, CFG, tmp_path / "c", ShardConfig(mode="val", shard_size=4), skip_bad=True)
    assert (report["items"], report["written"], report["left_out"]) == (7, 5, 2)
    assert (report["missing_files"], report["unreadable"], report["without_audio"]) == (1, 1, 1)
    dataset = ShardDataset(tmp_path / "c", CFG, "val")
    assert len(dataset) == 5
    assert sorted(Path(p).name for p, _ in dataset.dropped) == ["broken.mp4", "gone.mp4"]
    reasons = dict(dataset.dropped)
    assert "missing" in reasons[str(with_bad / "cat" / "gone.mp4")]
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["report"]["left_out"] == 2 and sum(s["samples"] for s in manifest["shards"]) == 5


def test_prepare_cli(with_bad, tmp_path, capsys):
    args = ["data", "prepare", str(with_bad), "--format", "folder", "--out", str(tmp_path / "s"), "--mode", "val",
            "--set", "data.num_frames=4", "data.frame_rate=4.0", "data.min_resize=40",
            "--set", "data.audio_seconds=2.0",
            "--shard-size", "3", "--audio-codec", "pcm16", "--no-progress"]
    assert main(args) == 1
    assert "broken.mp4" in capsys.readouterr().err
    assert main([*args, "--skip-bad", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["written"], report["unreadable"], report["shards"]) == (5, 1, 2)
    assert "broken.mp4" in report["first_left_out"][0]
    assert main([*args, "--skip-bad"]) == 1
    assert "already holds finished shards" in capsys.readouterr().err
    single = {p.name: p.read_bytes() for p in (tmp_path / "s").glob("shard-*.tar")}
    assert main([*args, "--skip-bad", "--overwrite", "--workers", "2"]) == 0  # 2 processes, same bytes
    assert "left out: 1 (0 missing files, 1 unreadable" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").glob("shard-*.tar")} == single
    assert main([*args, "--out", str(tmp_path / "t"), "--workers", "2"]) == 1  # a worker's error stops the run
    assert "broken.mp4" in capsys.readouterr().err
    ann = load_shard_annotations(tmp_path / "s")
    assert ann.class_names == ["cat", "dog"] and len(ann.items) == 5 and ann.format == "shards"
    pcm = ShardDataset(tmp_path / "s", dataclasses.replace(CFG, num_mel_bins=32), "val")
    assert pcm[0]["spectrogram"].shape == (200, 32)


# ---------------------------------------------------------------------- training
def test_train_and_eval_from_shards(media, tmp_path, capsys):
    data = tiny_config().data
    ann = parse_folder(media)
    for mode in ("train", "val", "test"):
        prepare_shards(ann, data, tmp_path / mode, ShardConfig(mode=mode, shard_size=2))
    cfg = tiny_config("dataset.format=shards", f"dataset.train=[{tmp_path / 'train'}]",
                      f"dataset.val=[{tmp_path / 'val'}]", f"dataset.test=[{tmp_path / 'test'}]",
                      "train.batch_size=2", "train.epochs=2", "train.eval_every=2")
    config = write_config(cfg, tmp_path / "cfg.yaml")
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run), "--no-progress"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 4  # 5 items, batches of 2: 2 steps per epoch
    assert results["test"]["num_examples"] == 5 and results["test"]["num_views"] == 10
    assert results["skipped"]["train_clips_unreadable"] == 0
    capsys.readouterr()
    assert main(["eval", str(run / "final"), "--split", "val", "--format", "shards", "--data", str(tmp_path / "val"),
                 "--out", str(tmp_path / "ev"), "--num-workers", "0", "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_videos"] == 5 and report["metrics"]["num_views"] == 5


def test_train_from_a_stream_resumes_to_the_same_weights(media, tmp_path, monkeypatch):
    """`dataset.stream`: training reads the shards in sequence over 2 loader workers; a run
    stopped after a checkpoint in the middle of a pass resumes to the uninterrupted weights."""
    from safetensors.torch import load_file

    from mbt.train.loop import Trainer

    data = tiny_config().data
    prepare_shards(parse_folder(media), data, tmp_path / "train", ShardConfig(mode="train", shard_size=2))
    cfg = tiny_config("dataset.format=shards", f"dataset.train=[{tmp_path / 'train'}]", "dataset.stream=true",
                      "dataset.shuffle_buffer=2", "train.batch_size=2", "train.epochs=3", "train.num_workers=2",
                      "train.checkpoint_every=1", "model.stochastic_depth=0.2")
    config = write_config(cfg, tmp_path / "cfg.yaml")
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "full"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "full/results.json").read_text())["steps"] == 6
    assert "shard pass 0: 1 of 5 items left out" in (tmp_path / "full/log.txt").read_text()  # batches of 2

    save = Trainer._save

    def save_then_stop(self):
        save(self)
        if self.step == 3:  # one step into the second pass over the shards
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_stop)
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "cut"), "--no-progress"]) == 130
    monkeypatch.setattr(Trainer, "_save", save)
    assert main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    a, b = (load_file(tmp_path / run / "final/model.safetensors") for run in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(Exception, match="stream"):
        tiny_config("dataset.stream=true")  # a format other than shards

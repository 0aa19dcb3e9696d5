"""AVDataset and build_loader on small generated videos (H.264 + AAC written with PyAV)."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mbt.cli import main
from mbt.data.annotations import AnnotationError, Annotations, Item, parse_folder
from mbt.data.config import DataConfig
from mbt.data.dataset import AVDataset, ClipError, SkippedItem, spectrogram_stats
from mbt.data.loader import ShardSampler, build_loader, class_balanced_weights, collate
from mbt.data.sampling import StepBatchSampler

FPS = 25
SECONDS = 3.0
CFG = DataConfig(
    num_frames=4,
    frame_rate=4.0,
    image_size=32,
    min_resize=40,
    audio_seconds=2.0,
    num_mel_bins=32,
    freq_mask_max_bins=8,
    num_test_clips=2,
)


def write_video(path: Path, seconds: float = SECONDS, audio: bool = True, freq: float = 440.0) -> None:
    """64x48 H.264 at 25 fps whose red level rises with the frame index (frame k: 255 k / (n-1)),
    and a mono 16 kHz AAC sine of `freq` Hz."""
    w, h, sr = 64, 48, 16000
    n = round(seconds * FPS)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        if audio:
            ast = c.add_stream("aac", rate=sr)
            ast.layout = "mono"
        for k in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = round(255 * k / (n - 1))
            img[:, : (k * w) // n, 1] = 200
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if audio:
            t = np.arange(int(seconds * sr)) / sr
            wav = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
            for k in range(0, len(wav), 1024):
                frame = av.AudioFrame.from_ndarray(wav[None, k : k + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = sr, k
                for p in ast.encode(frame):
                    c.mux(p)
            for p in ast.encode():
                c.mux(p)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A folder dataset: 2 classes, 5 videos, one without an audio track."""
    root = tmp_path_factory.mktemp("media")
    for name, audio, freq in [
        ("dog/d1.mp4", True, 440.0),
        ("dog/d2.mp4", True, 880.0),
        ("dog/d3_silent.mp4", False, 0.0),
        ("cat/c1.mp4", True, 220.0),
        ("cat/c2.mp4", True, 1760.0),
    ]:
        (root / name).parent.mkdir(exist_ok=True)
        write_video(root / name, audio=audio, freq=freq)
    return root


@pytest.fixture()
def corrupt_root(media, tmp_path) -> Path:
    """The media folder plus a corrupt .mp4 (random bytes)."""
    root = tmp_path / "with_corrupt"
    for p in media.rglob("*.mp4"):
        (root / p.relative_to(media)).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(p, root / p.relative_to(media))
    (root / "cat" / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    return root


# ---------------------------------------------------------------------- items
def test_items_shapes_labels_and_audio(media):
    ann = parse_folder(media)
    ds = AVDataset(ann, CFG, "val")
    assert len(ds) == 5 and ds.num_classes == 2
    for i in range(len(ds)):
        x = ds[i]
        assert x["rgb"].shape == (4, 3, 32, 32) and x["rgb"].dtype == torch.float32
        assert float(x["rgb"].min()) >= -1.0 and float(x["rgb"].max()) <= 1.0
        assert x["spectrogram"].shape == (CFG.num_spectrogram_frames, 32)
        assert x["spectrogram"].dtype == torch.float32 and torch.isfinite(x["spectrogram"]).all()
        item = ann.items[i]
        assert x["label"].tolist() == [float(k == item.labels[0]) for k in range(2)]
        assert x["label_index"] == item.labels[0] and x["video_id"] == item.video_id
        assert x["index"] == i and x["clip_index"] == 0
        assert x["has_audio"] == ("silent" not in item.path)
    # the sines of different pitch peak in different mel bands
    peaks = {ann.items[i].video_id: int(ds[i]["spectrogram"].mean(0).argmax()) for i in range(5)}
    assert peaks["cat/c1"] < peaks["dog/d1"] < peaks["dog/d2"] < peaks["cat/c2"]


def test_video_without_audio_has_a_spectrogram(media):
    ann = parse_folder(media)
    ds = AVDataset(ann, CFG, "train")
    silent = next(i for i, it in enumerate(ann.items) if "silent" in it.path)
    x = ds[silent]
    assert x["has_audio"] is False
    assert x["spectrogram"].shape == (CFG.num_spectrogram_frames, 32)
    assert torch.isfinite(x["spectrogram"]).all()
    assert float(x["spectrogram"].std()) < 1e-3  # silence: one constant level
    audio_only = AVDataset(ann, CFG, "val", modalities=("spectrogram",))
    assert set(audio_only[silent]) >= {"spectrogram", "has_audio"} and "rgb" not in audio_only[silent]
    video_only = AVDataset(ann, CFG, "val", modalities=("rgb",))
    assert "spectrogram" not in video_only[0] and video_only[0]["rgb"].shape == (4, 3, 32, 32)


def test_clip_timing_follows_the_policy(media):
    ann = parse_folder(media)
    item = ann.items[0]
    val = AVDataset(ann, CFG, "val")
    # val: the segment middle; frames 1/frame_rate apart around it
    g = torch.Generator().manual_seed(0)
    assert val.clip_centre(item, 0, g) == pytest.approx(SECONDS / 2)
    assert val.frame_times(1.5) == pytest.approx([1.125, 1.375, 1.625, 1.875])
    # the decoded frames are the ones shown at those times: red level k/(n-1) of frame k = floor(25 t)
    x = AVDataset(ann, CFG, "val", modalities=("rgb",))[0]
    red = x["rgb"][:, 0].mean(dim=(1, 2))
    expected = torch.tensor([(np.floor(t * FPS) / (SECONDS * FPS - 1)) * 2 - 1 for t in val.frame_times(1.5)])
    assert torch.allclose(red, expected.float(), atol=0.04)
    # test: evenly spaced centres over [start + h, end - h], h = half the longest window (audio 2 s)
    test = AVDataset(ann, CFG, "test")
    assert len(test) == 5 * 2
    assert [test.clip_centre(item, v, g) for v in range(2)] == pytest.approx([1.0, 2.0])
    assert [test[v]["clip_index"] for v in range(2)] == [0, 1]
    # 3 spatial crops per clip: views clip * 3 + crop, left/centre/right of the wide frame
    crops = AVDataset(ann, dataclasses.replace(CFG, num_test_crops=3), "test", modalities=("rgb",))
    assert len(crops) == 5 * 2 * 3
    views = [crops[v] for v in range(6)]
    assert [x["clip_index"] for x in views] == list(range(6))
    # rgb only: h = clip_seconds / 2 = 0.5 s
    assert [crops.clip_centre(item, v, g) for v in range(6)] == pytest.approx([0.5] * 3 + [2.5] * 3)
    assert not torch.equal(views[0]["rgb"], views[2]["rgb"])
    assert torch.equal(views[0]["rgb"][..., :, 10:32], views[1]["rgb"][..., :, 0:22])  # shifted by 10 px
    # train: random centres inside [1, 2], different per epoch
    train = AVDataset(ann, CFG, "train")
    centres = [train.clip_centre(item, 0, torch.Generator().manual_seed(s)) for s in range(50)]
    assert 1.0 <= min(centres) < 1.2 and 1.8 < max(centres) <= 2.0
    # a segment inside a longer file (EPIC-style): centred on the segment
    seg = dataclasses.replace(item, start=1.2, end=2.0)
    assert val.clip_centre(seg, 0, g) == pytest.approx(1.6)
    assert train.clip_centre(seg, 0, g) == pytest.approx(1.6)  # shorter than the window: its middle
    # no window starts before the file: the centre is at least h = 1 s
    early = dataclasses.replace(item, start=0.1, end=0.5)
    assert val.clip_centre(early, 0, g) == pytest.approx(1.0)


def test_labels_multi_label_and_epic_blocks(media):
    ann = parse_folder(media)
    path = ann.items[0].path
    multi = Annotations([Item(path, (0, 2), video_id="x")], ["a", "b", "c"], multi_label=True)
    x = AVDataset(multi, CFG, "val", modalities=("spectrogram",))[0]
    assert x["label"].tolist() == [1.0, 0.0, 1.0] and x["label_index"] == -1
    epic = Annotations([Item(path, (1, 3 + 0), video_id="P01_1")], ["n0", "n1", "n2", "v0", "v1"],
                       class_splits=(3, 2), split_names=("noun", "verb"))
    x = AVDataset(epic, CFG, "val", modalities=("spectrogram",))[0]
    assert x["label"].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0] and x["label_index"] == -1


# ---------------------------------------------------------------------- bad media
def test_corrupt_file_is_named_or_skipped_and_counted(corrupt_root):
    ann = parse_folder(corrupt_root)
    broken = next(i for i, it in enumerate(ann.items) if it.path.endswith("broken.mp4"))
    with pytest.raises(ClipError, match=r"broken\.mp4"):
        AVDataset(ann, CFG, "val")[broken]
    ds = AVDataset(ann, CFG, "val", skip_bad=True)
    marker = ds[broken]
    assert isinstance(marker, SkippedItem) and marker.path.endswith("broken.mp4") and marker.reason
    loader = build_loader(ds, batch_size=4, train=False)
    batches = list(loader)
    assert sum(b["batch_size"] for b in batches) == len(ann.items) - 1
    assert [Path(p).name for p, _ in loader.skipped] == ["broken.mp4"]
    assert sum(len(b["skipped"]) for b in batches) == 1
    assert all(not any(v.endswith("broken") for v in b["video_id"]) for b in batches)


def test_missing_files_stop_the_dataset_unless_skipped(media, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{media}/dog/d1.mp4,dog\n{media}/dog/nope.mp4,dog\n{media}/cat/c1.mp4,cat\n")
    from mbt.data.annotations import parse_manifest

    ann = parse_manifest(manifest)
    with pytest.raises(AnnotationError, match=r"1 of 3 media files are missing:\n.*m\.csv:3: .*nope\.mp4"):
        AVDataset(ann, CFG, "val")
    ds = AVDataset(ann, CFG, "val", skip_bad=True)
    assert len(ds) == 2 and [(Path(p).name, r) for p, r in ds.dropped] == [("nope.mp4", "missing file")]


# ---------------------------------------------------------------------- loader
def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_items_do_not_depend_on_workers(media):
    ds = AVDataset(parse_folder(media), CFG, "train", seed=3)
    runs = {}
    for workers in (0, 2):
        loader = build_loader(ds, batch_size=2, train=True, num_workers=workers, seed=7, drop_last=False)
        runs[workers] = [_batches(loader, e) for e in (0, 1)]
    for e in (0, 1):
        for b0, b2 in zip(runs[0][e], runs[2][e], strict=True):
            assert b0["video_id"] == b2["video_id"]
            assert torch.equal(b0["rgb"], b2["rgb"]) and torch.equal(b0["spectrogram"], b2["spectrogram"])
    # a new epoch reshuffles and re-augments; the direct indexing path agrees with the loader
    order = [[v for b in runs[0][e] for v in b["video_id"]] for e in (0, 1)]
    assert sorted(order[0]) == sorted(order[1]) and order[0] != order[1]
    first = runs[0][1][0]
    ds.set_epoch(1)
    assert torch.equal(ds[int(first["index"][0])]["rgb"], first["rgb"][0])
    ds.set_epoch(0)
    assert not torch.equal(ds[int(first["index"][0])]["rgb"], first["rgb"][0])


def test_collate_keeps_strings_and_stacks_tensors():
    items = [
        {"x": torch.ones(2), "video_id": "a", "has_audio": True, "index": 0},
        SkippedItem(1, "b.mp4", "DecodeError: bad"),
        {"x": torch.zeros(2), "video_id": "c", "has_audio": False, "index": 2},
    ]
    batch = collate(items)
    assert batch["x"].shape == (2, 2) and batch["video_id"] == ["a", "c"]
    assert batch["has_audio"].tolist() == [True, False] and batch["index"].dtype == torch.int64
    assert batch["skipped"] == [("b.mp4", "DecodeError: bad")] and batch["batch_size"] == 2
    assert collate([SkippedItem(0, "z", "r")]) == {"skipped": [("z", "r")], "batch_size": 0}


class _Raising(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, key):
        _, index = key
        if index == 2:
            raise ClipError(f"/data/clips/video_{index}.mp4: cannot read the clip: moov atom not found")
        if index == 1 and os.environ.get("MBT_TEST_KILL_WORKER"):  # before index 2 raises
            os._exit(1)
        return {"x": torch.tensor([index])}


def test_worker_error_propagates_with_the_file_name():
    loader = build_loader(_Raising(), batch_size=1, train=False, num_workers=2)
    with pytest.raises(ClipError, match=r"video_2\.mp4: cannot read the clip"):
        list(loader)


# torch's iterator cleanup re-reports the dead worker when it is collected: expected here
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_dead_worker_raises_instead_of_hanging(monkeypatch):
    monkeypatch.setenv("MBT_TEST_KILL_WORKER", "1")
    loader = build_loader(_Raising(), batch_size=1, train=False, num_workers=1)
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        for _ in loader:
            pass
    del loader
    gc.collect()


class _Numbers(torch.utils.data.Dataset):
    """Returns the index and a draw from NumPy's global generator (seeded per worker)."""

    def __len__(self):
        return 8

    def __getitem__(self, key):
        _, index = key
        return {"index": index, "draw": float(np.random.random())}


def test_worker_seeding_is_reproducible():
    runs = [[b["draw"].tolist() for b in build_loader(_Numbers(), 2, train=False, num_workers=2, seed=5)]
            for _ in range(2)]
    assert runs[0] == runs[1]
    other = [b["draw"].tolist() for b in build_loader(_Numbers(), 2, train=False, num_workers=2, seed=6)]
    assert other != runs[0]


def test_distributed_sampling(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        train = build_loader(_Numbers(), 4, train=True, distributed=True, seed=1)
        orders = [[i for b in _batches(train, e) for i in b["index"].tolist()] for e in (0, 1, 0)]
        assert sorted(orders[0]) == list(range(8)) and orders[0] != orders[1] and orders[0] == orders[2]
        # the order is the trainer's: the same global batches whatever the number of processes
        single = build_loader(_Numbers(), 4, train=True, seed=1)
        assert [i for b in _batches(single, 1) for i in b["index"].tolist()] == orders[1]
        val = build_loader(_Numbers(), 3, train=False, distributed=True)
        assert [i for b in val for i in b["index"].tolist()] == list(range(8))  # no padding, no drop
    finally:
        dist.destroy_process_group()
    with pytest.raises(RuntimeError, match="needs torch.distributed to be initialised"):
        build_loader(_Numbers(), 4, train=True, distributed=True)


def test_class_balanced_sampling():
    ann = Annotations(
        [Item("a", (0,)), Item("b", (0,)), Item("c", (0,)), Item("d", (0, 1))], ["common", "rare"], multi_label=True
    )
    w = class_balanced_weights(ann)
    assert w.tolist() == pytest.approx([1 / 4, 1 / 4, 1 / 4, 1 / 4 + 1])
    sampler = StepBatchSampler(4, 100, 40, seed=0, weights=w)  # 4000 draws
    counts = np.bincount([i for batch in sampler for _, i in batch], minlength=4) / 4000
    assert counts == pytest.approx((w / w.sum()).numpy(), abs=0.03)
    assert list(sampler) == list(sampler)  # same epoch, same draws
    sampler.set_epoch(1)
    assert list(sampler) != list(StepBatchSampler(4, 100, 40, seed=0, weights=w))
    # distributed: the ranks split each step's draws
    ranks = [[i for batch in StepBatchSampler(4, 10, 1, rank=r, world_size=2, seed=0, weights=w) for _, i in batch]
             for r in range(2)]
    full = [i for batch in StepBatchSampler(4, 10, 1, seed=0, weights=w) for _, i in batch]
    assert ranks[0] == full[:5] and ranks[1] == full[5:]
    # evaluation shards cover every index once, without padding
    shards = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(7))


def test_one_sampler_for_loader_and_trainer():
    """`build_loader(balanced=True)` draws what the trainer's sampler draws for a (seed, epoch),
    and a loader that keeps the last partial step covers every item once per epoch."""
    ann = Annotations([Item(str(k), (0,) if k < 5 else (1,)) for k in range(6)], ["common", "rare"])

    class Keys(torch.utils.data.Dataset):
        annotations = ann

        def __len__(self):
            return 6

        def __getitem__(self, key):
            return {"index": key[1], "epoch": key[0]}

    w = class_balanced_weights(ann)
    trainer = StepBatchSampler(6, batch_size=6, steps_per_epoch=1, seed=7, weights=w)
    trainer.epoch = 2
    loader = build_loader(Keys(), 2, train=True, seed=7, balanced=True)
    loader.set_epoch(2)
    batches = list(loader)
    assert [i for b in batches for i in b["index"].tolist()] == [i for batch in trainer for _, i in batch]
    assert all(b["epoch"].tolist() == [2, 2] for b in batches)
    full = build_loader(Keys(), 4, train=True, seed=7, drop_last=False)
    assert len(full) == 2 and sorted(i for b in full for i in b["index"].tolist()) == list(range(6))
    assert [len(b["index"]) for b in full] == [4, 2]


def test_balanced_loader_oversamples_the_rare_class(media):
    ann = parse_folder(media)  # 3 dog, 2 cat
    ds = AVDataset(ann, CFG, "train", modalities=("spectrogram",))
    loader = build_loader(ds, batch_size=5, train=True, balanced=True)
    assert len(list(loader)) == 1
    with pytest.raises(ValueError, match="balanced sampling is for training"):
        build_loader(AVDataset(ann, CFG, "test"), batch_size=2, train=False, balanced=True)


# ---------------------------------------------------------------------- stats
def test_spectrogram_stats_normalise_the_dataset(media):
    ann = parse_folder(media)
    stats = spectrogram_stats(AVDataset(ann, CFG, "val", modalities=("spectrogram",)))
    assert stats["items"] == 4 and stats["items_without_audio"] == 1 and stats["skipped"] == []
    assert stats["values"] == 4 * CFG.num_spectrogram_frames * CFG.num_mel_bins
    cfg = dataclasses.replace(CFG, spec_mean=stats["spec_mean"], spec_std=stats["spec_std"])
    ds = AVDataset(ann, cfg, "val", modalities=("spectrogram",))
    specs = torch.stack([ds[i]["spectrogram"] for i in range(len(ds)) if ds[i]["has_audio"]]).double()
    assert float(specs.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(specs.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    half = spectrogram_stats(AVDataset(ann, CFG, "val", modalities=("spectrogram",)), max_items=2)
    assert half["items"] + half["items_without_audio"] == 2


def test_cli_stats(media, capsys):
    sets = [f"--set=data.{k}={v}" for k, v in [("audio_seconds", 2.0), ("num_mel_bins", 32)]]
    assert main(["data", "stats", "--format", "folder", str(media), *sets]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(": ") for line in out.splitlines() if not line.startswith("#"))
    assert set(lines) == {"spec_mean", "spec_std"} and float(lines["spec_std"]) > 0
    assert "4 clips" in out and "1 without audio" in out
    assert main(["data", "stats", "--format", "folder", str(media), *sets, "--json", "--max-items", "3"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["items"] + stats["items_without_audio"] == 3

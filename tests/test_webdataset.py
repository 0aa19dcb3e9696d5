"""`dataset.format='webdataset'`: tars of raw media + labels written by the `webdataset` package's
`ShardWriter`, read through the same clip path as files, over HTTP too, and trained on."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
import yaml

from mbt.cli import main
from mbt.data.annotations import AnnotationError, parse_folder
from mbt.data.dataset import AVDataset
from mbt.data.shards import ShardConfig, ShardDataset, ShardError, prepare_shards
from mbt.data.shards.webdataset import WebDataset, expand_urls, load_webdataset

from .http_server import FileServer
from .test_shards import CFG, VIDEOS, write_video
from .tiny_experiment import tiny_config, write_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wds_media")
    for name, freq in VIDEOS:
        (root / name).parent.mkdir(exist_ok=True)
        write_video(root / name, freq)
    return root


def _key(video_id: str) -> str:
    return video_id.replace("/", "_").replace(".", "_")  # WebDataset keys hold no dot


@pytest.fixture(scope="module")
def tars(media, tmp_path_factory) -> Path:
    """The folder dataset's items, in its order, as `ShardWriter` tars of 2 samples: `.mp4` + `.cls`."""
    out = tmp_path_factory.mktemp("wds")
    ann = parse_folder(media)
    with wds.ShardWriter(str(out / "shards-%06d.tar"), maxcount=2, verbose=0) as sink:
        for it in ann.items:
            sink.write({"__key__": _key(it.video_id), "mp4": Path(it.path).read_bytes(), "cls": it.labels[0]})
    return out


PATTERN = "shards-{000000..000002}.tar"


def test_brace_expansion():
    assert expand_urls("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    assert expand_urls(["s3://b/{x,y}-{8..10}.tar"]) == ["s3://b/x-8.tar", "s3://b/x-9.tar", "s3://b/x-10.tar",
                                                          "s3://b/y-8.tar", "s3://b/y-9.tar", "s3://b/y-10.tar"]
    with pytest.raises(ValueError, match="runs backwards"):
        expand_urls("a-{3..1}.tar")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_items_equal_the_same_files_read_from_disk(media, tars, split):
    ann = parse_folder(media)
    stored = load_webdataset(str(tars / PATTERN), classes=ann.class_names)
    assert len(stored.sources) == 3 and [it.video_id for it in stored.items] == [_key(i.video_id) for i in ann.items]
    assert [it.labels for it in stored.items] == [it.labels for it in ann.items]
    direct, wds_set = AVDataset(ann, CFG, split, seed=3), WebDataset(stored, CFG, split, seed=3)
    assert len(direct) == len(wds_set)
    for i in range(len(direct)):
        x, y = direct[(1, i)], wds_set[(1, i)]  # same (epoch, index): same random clip and augmentation
        assert torch.equal(x["rgb"], y["rgb"]) and torch.equal(x["spectrogram"], y["spectrogram"])
        assert (x["has_audio"], x["label_index"]) == (y["has_audio"], y["label_index"])


def test_read_over_http(media, tars):
    local = WebDataset(load_webdataset(str(tars / PATTERN)), CFG, "val")
    with FileServer(tars) as server:
        remote = WebDataset(load_webdataset(f"{server.url}/{PATTERN}"), CFG, "val")
        assert [it.extra["offset"] for it in remote.items] == [it.extra["offset"] for it in local.items]
        for i in range(len(local)):
            assert torch.equal(local[i]["rgb"], remote[i]["rgb"])
    assert local.annotations.class_names == ["0", "1"]  # no class list: the indices seen


def _wav(seconds: float = 2.5, rate: int = 16000) -> bytes:
    path = Path(__file__).parent / "__wav.tmp"
    t = np.arange(int(seconds * rate)) / rate
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((0.3 * np.sin(2 * np.pi * 330 * t) * 32767).astype("<i2").tobytes())
    data = path.read_bytes()
    path.unlink()
    return data


def test_json_labels_audio_only_members_and_bad_samples(media, tmp_path):
    mp4 = (media / "dog/d1.mp4").read_bytes()
    with wds.ShardWriter(str(tmp_path / "j-%d.tar"), maxcount=10, verbose=0) as sink:
        sink.write({"__key__": "a", "mp4": mp4, "json": {"labels": ["dog", "barking"], "start": 0.5, "end": 2.5}})
        sink.write({"__key__": "b", "wav": _wav(), "json": {"label": "birdsong", "video_id": "yt-b"}})
        sink.write({"__key__": "c", "mp4": mp4})  # no label
        sink.write({"__key__": "d", "json": {"label": "dog"}})  # no media
    with pytest.raises(AnnotationError, match=r"(?s)2 bad sample\(s\).*j-0.tar:3: sample c: no label member"):
        load_webdataset(str(tmp_path / "j-0.tar"))
    ann = load_webdataset(str(tmp_path / "j-{0..0}.tar"), skip_bad=True)
    assert [str(p) for p in ann.problems][1].endswith("j-0.tar:4: sample d: no media member (one of .mp4, .webm, "
                                                      ".mkv, .avi, .mov, .m4v, .wav, .flac, .mp3, .ogg, .m4a, .opus)")
    assert ann.class_names == ["barking", "birdsong", "dog"] and ann.multi_label
    assert [it.labels for it in ann.items] == [(2, 0), (1,)] and ann.items[0].start == 0.5
    ds = WebDataset(ann, CFG, "val")
    a, b = ds[0], ds[1]
    assert torch.equal(a["label"], torch.tensor([1.0, 0.0, 1.0]))
    assert b["video_id"] == "yt-b" and b["has_audio"] and not b["has_rgb"]  # an audio-only file: grey frames
    assert float(b["spectrogram"].std()) > 0
    with pytest.raises(AnnotationError, match=r"sample a: unknown class 'barking'"):
        load_webdataset(str(tmp_path / "j-0.tar"), classes=["dog", "birdsong"], skip_bad=False)


def test_foreign_tars_are_not_blamed_on_an_unfinished_prepare(tars):
    with pytest.raises(ShardError, match=r"3 tar file\(s\) but not written by `mbt data prepare`.*"
                                         "dataset.format='webdataset'") as info:
        ShardDataset(tars, CFG, "val")
    assert "did not finish" not in str(info.value)
    with pytest.raises(ShardError, match=r"a tar file or list, not a shard folder.*webdataset"):
        ShardDataset(tars / "shards-000000.tar", CFG, "val")


def test_mbt_shards_are_still_recognised(media, tmp_path):
    prepare_shards(parse_folder(media), CFG, tmp_path / "s", ShardConfig(mode="val", shard_size=5))
    with pytest.raises(AnnotationError, match=r"shard-000000\.tar: a shard written by `mbt data prepare` .*"
                                              "dataset.format='shards'"):
        load_webdataset(str(tmp_path / "s" / "shard-000000.tar"))
    assert len(ShardDataset(tmp_path / "s", CFG, "val")) == 5


def test_train_on_shardwriter_tars(media, tars, tmp_path):
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    cfg = tiny_config("dataset.format=webdataset", f"dataset.train={tars / PATTERN}",  # one pattern: no [...]
                      f"dataset.val=['{tars / 'shards-{000001..000002}.tar'}']",  # a list: quoted (YAML braces)
                      f"dataset.classes={tmp_path}/classes.txt",
                      "train.batch_size=2", "train.epochs=2", "train.eval_every=2", "train.num_workers=2")
    run = tmp_path / "run"
    assert main(["train", "--config", str(write_config(cfg, tmp_path / "cfg.yaml")), "--run-dir", str(run),
                 "--no-progress"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 4  # 5 items, batches of 2: 2 steps per epoch
    assert results["skipped"]["train_clips_unreadable"] == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["label_names"] == ["cat", "dog"]
    assert results["val"]["num_examples"] == 3  # shards 1 and 2 of the brace list

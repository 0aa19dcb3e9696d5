"""Shard folders over HTTP (a server on 127.0.0.1): transient failures retried, an outage reported once
with the URL and its cause (with or without skip_bad), servers without range requests, missing backends."""

from __future__ import annotations

import dataclasses
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

from mbt.data.annotations import parse_folder
from mbt.data.shards import (
    ReadConfig,
    RemoteReadError,
    ShardConfig,
    ShardDataset,
    ShardStream,
    build_stream_loader,
    prepare_shards,
)
from mbt.data.shards.remote import _NO_RANGE_HOSTS, url_fs

from .http_server import FileServer, folder_url
from .test_shards import CFG, VIDEOS, write_video

FAST = ReadConfig(retries=3, backoff=0.01, max_backoff=0.05, timeout=5.0)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A served folder holding `val/`: 5 videos as val shards of 2 samples (3 shards)."""
    base = tmp_path_factory.mktemp("served")
    media = base / "media"
    for name, freq in VIDEOS:
        (media / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(media / name, freq)
    prepare_shards(parse_folder(media), CFG, base / "val", ShardConfig(mode="val", shard_size=2))
    return base


def _same_items(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["index"] == y["index"]
        assert torch.equal(x["rgb"], y["rgb"]) and torch.equal(x["spectrogram"], y["spectrogram"])


def _stream(location, read=FAST):
    return sorted(ShardStream(location, CFG, "val", read=read), key=lambda it: it["index"])


@pytest.mark.parametrize("fail_with", ["503", "reset"])
def test_transient_failures_are_retried(root, fail_with):
    local = ShardDataset(root / "val", CFG, "val")
    expected = [local[i] for i in range(len(local))]
    with FileServer(root, fail_first=3, fail_with=fail_with) as server:
        remote = ShardDataset(folder_url(server, root, root / "val"), CFG, "val", read=FAST)  # manifest: 3 failures
        assert server.failed == 3
        server.failed = 0  # three more, now on the sample reads
        _same_items(expected, [remote[i] for i in range(len(remote))])
        assert server.failed == 3
        server.failed = 0
        _same_items(expected, _stream(folder_url(server, root, root / "val")))
        assert server.failed == 3


def test_retries_spent_give_one_error_naming_the_url(root):
    with FileServer(root, fail_first=100) as server:
        url = folder_url(server, root, root / "val")
        with pytest.raises(RemoteReadError, match=rf"{url}/manifest.json: unreachable after 4 tries .*HTTP 503"):
            ShardDataset(url, CFG, "val", read=FAST)
        assert server.requests == 4


def test_missing_file_is_not_retried(root):
    with FileServer(root) as server:
        with pytest.raises(OSError, match=r"nowhere/manifest.json: no manifest"):
            ShardDataset(f"{server.url}/nowhere", CFG, "val", read=FAST)
        assert server.requests == 1


def test_server_killed_mid_stream_is_one_clear_error(root):
    with FileServer(root, kill_after=30_000) as server:
        url = folder_url(server, root, root / "val")
        stream = ShardStream(url, CFG, "val", read=FAST, skip_bad=True)  # an outage is no bad item
        with pytest.raises(RemoteReadError) as info:
            list(stream)
    message = str(info.value)
    assert f"{url}/shard-00000" in message and "ConnectionRefusedError" in message
    assert int(re.search(r"connection lost at byte (\d+)", message).group(1)) > 0  # mid-file
    assert "truncated" not in message


def test_outage_in_a_loader_worker_reaches_the_main_process_as_its_message(root):
    with FileServer(root, kill_after=30_000) as server:
        url = folder_url(server, root, root / "val")
        # the forked worker holds a copy of the server's socket: connecting then times out instead of being refused
        read = dataclasses.replace(FAST, timeout=0.5)
        loader = build_stream_loader(ShardStream(url, CFG, "val", read=read), batch_size=2, num_workers=1)
        with pytest.raises(RemoteReadError, match=rf"^{url}/shard-00000\d\.tar: .*connection lost at byte \d+.*"
                                                  r"\(in a data-loader worker; MBT_DEBUG=1 shows its traceback\)$"):
            list(loader)


@pytest.mark.parametrize("skip_bad", [False, True])
def test_server_down_during_random_access_is_one_clear_error(root, skip_bad):
    server = FileServer(root)
    url = folder_url(server, root, root / "val")
    with server:
        dataset = ShardDataset(url, CFG, "val", read=FAST, skip_bad=skip_bad)
        dataset[0]
    with pytest.raises(RemoteReadError, match=rf"{url}/shard-0000\d\d\.tar: unreachable after 4 tries .*"
                                              "ConnectionRefusedError"):
        dataset[1]


def test_server_without_range_requests(root):
    local = ShardDataset(root / "val", CFG, "val")
    expected = [local[i] for i in range(len(local))]
    with FileServer(root, ranges=False) as server:
        _NO_RANGE_HOSTS.discard(server.url)
        remote = ShardDataset(folder_url(server, root, root / "val"), CFG, "val", read=FAST)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            items = [remote[i] for i in range(len(remote))]
        assert server.range_requests >= len(remote)  # asked for ranges, got whole files
        assert sum("ignores HTTP range requests" in str(w.message) for w in caught) == 1
        _same_items(expected, items)
        _same_items(expected, _stream(folder_url(server, root, root / "val")))


def test_missing_backend_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if not installed
    with pytest.raises(ImportError, match=r"^s3://bucket/shards: reading s3:// URLs needs s3fs "
                                          r"\(pip install 'mbt\[s3\]'\)$"):
        url_fs("s3://bucket/shards")


def test_read_settings_come_from_the_dataset_config(root):
    from mbt.models.config import ConfigError
    from mbt.train.data import build_dataset

    from .tiny_experiment import tiny_config

    with pytest.raises(ConfigError, match="read_timeout: > 0"):
        tiny_config("dataset.read_timeout=0")
    with FileServer(root, fail_first=100) as server:
        cfg = tiny_config("dataset.format=shards", f"dataset.val={folder_url(server, root, root / 'val')}",
                          "dataset.read_retries=2", "dataset.read_backoff=0.01")
        with pytest.raises(RemoteReadError, match="unreachable after 3 tries"):
            build_dataset(cfg, "val")
        assert server.requests == 3


@pytest.mark.parametrize("ranges", [True, False])
def test_a_truncated_shard_is_still_called_truncated(root, tmp_path, ranges):
    """Damage on the server is no network trouble: no retries, the shard named as before."""
    import shutil

    from mbt.data.dataset import ClipError
    from mbt.data.shards import ShardError

    shutil.copytree(root / "val", tmp_path / "val")
    tar = tmp_path / "val" / "shard-000000.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])  # inside a sample
    with FileServer(tmp_path, ranges=ranges) as server:
        url = f"{server.url}/val"
        with pytest.raises(ShardError, match=r"shard-000000\.tar: truncated or corrupt after \d samples"):
            list(ShardStream(url, CFG, "val", read=FAST))
        dataset = ShardDataset(url, CFG, "val", read=FAST)
        index = next(i for i, it in enumerate(dataset.items) if it.extra["shard"][0] == 0)
        with pytest.raises(ClipError, match=r"shard-000000\.tar: \d+ bytes, expected \d+: .*partially written"):
            dataset[index]
        assert server.failed == 0


@pytest.mark.parametrize("skip_bad", [False, True])
def test_training_stops_when_the_shard_server_dies(root, tmp_path, capsys, skip_bad):
    """The outage of the issue: before, with skip_bad the run went on with empty batches and exit code 0."""
    from mbt.cli import main

    from .tiny_experiment import tiny_config, write_config

    data = tiny_config().data
    prepare_shards(parse_folder(root / "media"), data, tmp_path / "train", ShardConfig(mode="train", shard_size=2))
    with FileServer(tmp_path, kill_after=100_000) as server:
        cfg = tiny_config("dataset.format=shards", f"dataset.train={server.url}/train", f"dataset.skip_bad={skip_bad}",
                          "dataset.read_retries=1", "dataset.read_backoff=0.01", "train.batch_size=2",
                          "train.epochs=20")
        code = main(["train", "--config", str(write_config(cfg, tmp_path / "cfg.yaml")), "--run-dir",
                     str(tmp_path / "run"), "--no-progress"])
    assert code == 1 and server.stopped
    err = capsys.readouterr().err
    assert re.search(rf"error: {server.url}/train/shard-00000\d\.tar: unreachable after 2 tries .*"
                     "Connection(Refused|Reset)Error", err), err
    assert not (tmp_path / "run" / "results.json").exists()

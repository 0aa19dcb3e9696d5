"""Damaged and unusual media: concealed damage counted, still images and directories refused,
files without a duration read, stream choice, unreadable clips counted once and named first."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from mbt.cli import main
from mbt.data.annotations import Annotations, Item
from mbt.data.dataset import AVDataset
from mbt.data.decode import DecodeError, media_duration, probe, read_clip
from mbt.data.loader import build_loader

from .conftest import ASSETS
from .test_dataset import CFG, write_video

H264 = Path(ASSETS) / "media" / "moviepy_example3_854x480_h264_mp3.mp4"


def _damaged_copy(tmp_path: Path) -> Path:
    """The real H.264 file with 4 KB overwritten in the middle (a fixed pattern)."""
    data = bytearray(H264.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = bytes((37 * i + 11) % 256 for i in range(4096))
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    return path


# ---------------------------------------------------------------------------- concealed damage
def test_concealed_damage_is_counted(tmp_path, capsys):
    damaged = _damaged_copy(tmp_path)
    times = [k / 10 for k in range(48)]
    clean = read_clip(H264, times, 0.0, 1.0)
    assert not clean.damage and clean.damage.decode_errors == clean.damage.corrupt_frames == 0
    assert not probe(H264, count_frames=True).damage
    clip = read_clip(damaged, times, 0.0, 1.0)  # decodes: FFmpeg conceals the damage
    assert clip.rgb.shape[0] == 48
    assert clip.damage.decode_errors > 0 and clip.damage.corrupt_frames > 0
    assert "h264" in clip.damage.first_error
    info = probe(damaged, count_frames=True)
    assert info.video.decoded_frames == 48 and info.damage.decode_errors > 0
    assert main(["data", "probe", str(damaged)]) == 0
    out, err = capsys.readouterr()
    assert f"warning: {damaged}: decoded with concealed damage" in err and "corrupt frame" in out


def test_frames_lost_without_an_error_are_counted_by_probe(tmp_path):
    """Damaged AVI chunks are dropped by the demuxer without an error: probe finds frames missing."""
    avi = Path(ASSETS) / "media" / "mmaction2_test_mpeg4_mp3.avi"
    assert not probe(avi, count_frames=True).damage
    data = bytearray(avi.read_bytes())
    data[139188 : 139188 + 4096] = np.random.default_rng(6).bytes(4096)
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    damage = probe(damaged, count_frames=True).damage
    assert damage.decode_errors == 0 and damage.missing_frames == 3 and damage


def test_dataset_and_loader_count_damaged_clips_once_per_file(tmp_path):
    damaged = _damaged_copy(tmp_path)
    items = [Item(str(p), (0,), start=0.0, end=4.0) for p in (H264, damaged)]
    ds = AVDataset(Annotations(items, ["a"]), CFG, "test")  # 2 views per file, both through the damage
    samples = [ds[i] for i in range(len(ds))]
    assert [bool(s["damage"]) for s in samples] == [False, False, True, True]
    loader = build_loader(ds, batch_size=4, train=False)
    for _ in range(2):
        assert sum(b["batch_size"] for b in loader) == 4  # damaged clips are still used
    assert [p for p, _ in loader.damaged] == [str(damaged)]


def test_audio_only_reads_report_damage(tmp_path):
    webm = Path(ASSETS) / "media" / "moviepy_bbb_432_433_vp8_vorbis_1s.webm"
    data = bytearray(webm.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 512] = bytes((37 * i + 11) % 256 for i in range(512))
    damaged = tmp_path / "damaged.webm"
    damaged.write_bytes(bytes(data))
    items = [Item(str(p), (0,), start=0.0, end=1.0) for p in (webm, damaged)]
    ds = AVDataset(Annotations(items, ["a"]), CFG, "val", modalities=("spectrogram",))
    assert ds[0]["damage"] == "" and "matroska" in ds[1]["damage"]


# ---------------------------------------------------------------------------- not videos
@pytest.mark.parametrize("fmt,codec", [("JPEG", "mjpeg"), ("PNG", "png")])
def test_still_images_are_refused_and_probed(tmp_path, capsys, fmt, codec):
    path = tmp_path / "picture.mp4"  # a misleading extension: told by the container, not the name
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(path, format=fmt)
    with pytest.raises(DecodeError, match=rf"picture\.mp4: a still image \({codec}\), not a video"):
        read_clip(path, [0.0, 0.5], 0.0, 0.0)
    info = probe(path, count_frames=True)
    assert info.still_image and info.video.decoded_frames == 1
    assert main(["data", "probe", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "still image" in err and "1 frames decoded" in out


def test_directory_is_named_as_such(tmp_path):
    with pytest.raises(DecodeError, match="is a directory"):
        probe(tmp_path)
    with pytest.raises(DecodeError, match="is a directory"):
        read_clip(tmp_path, [0.0], 0.0, 0.0)


# ---------------------------------------------------------------------------- no duration
def write_live_webm(path: Path, seconds: float = 2.0) -> Path:
    """VP9 + Opus WebM written in live mode: no duration in the container or the streams."""
    fps, sr = 10, 48000
    with av.open(str(path), "w", format="webm", options={"live": "1"}) as c:
        vs = c.add_stream("libvpx-vp9", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        ast = c.add_stream("libopus", rate=sr)
        for k in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 * k, np.uint8), format="rgb24")
            frame.pts = k
            c.mux(vs.encode(frame))
        c.mux(vs.encode())
        t = np.arange(round(seconds * sr)) / sr
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                           format="flt", layout="mono")
        frame.sample_rate, frame.pts = sr, 0
        c.mux(ast.encode(frame))
        c.mux(ast.encode())
    return path


def test_file_without_duration_is_read(tmp_path):
    path = write_live_webm(tmp_path / "no_duration.webm")
    info = probe(path)
    assert info.duration is None and info.video.duration is None and info.audio.duration is None
    ds = AVDataset(Annotations([Item(str(path), (0,))], ["a"]), CFG, "test")
    assert ds.segment(ds.items[0]) == (0.0, pytest.approx(2.0, abs=0.1))
    assert ds[0]["rgb"].shape[0] == CFG.num_frames and ds[0]["has_audio"]
    assert media_duration(path) == pytest.approx(2.0, abs=0.1)  # from the packets


# ---------------------------------------------------------------------------- stream choice
def write_two_streams(path: Path, sizes: list[tuple[int, int]], default: int | None) -> Path:
    """Matroska with two H.264 streams of ``sizes`` (each frame's level tells the stream:
    50 first, 200 second) and two AAC streams (300 Hz, 2000 Hz); stream ``default`` of each
    kind (0 or 1) is marked default, or none."""
    sr = 16000
    with av.open(str(path), "w", format="matroska", options={"default_mode": "passthrough"}) as c:
        videos = [c.add_stream("libx264", rate=10) for _ in sizes]
        for s, (w, h) in zip(videos, sizes, strict=True):
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        audios = [c.add_stream("aac", rate=sr) for _ in range(2)]
        for k, s in enumerate(videos + audios):
            s.disposition = av.stream.Disposition.default if k % 2 == default else av.stream.Disposition(0)
        for k in range(10):
            for s, level in zip(videos, (50, 200), strict=True):
                frame = av.VideoFrame.from_ndarray(np.full((s.height, s.width, 3), level, np.uint8), format="rgb24")
                frame.pts = k
                c.mux(s.encode(frame))
        t = np.arange(sr) / sr
        for s, freq in zip(audios, (300, 2000), strict=True):
            frame = av.AudioFrame.from_ndarray((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None],
                                               format="flt", layout="mono")
            frame.sample_rate, frame.pts = sr, 0
            c.mux(s.encode(frame))
        for s in videos + audios:
            c.mux(s.encode())
    return path


def _tone(audio: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.argmax(spectrum) * sr / len(audio))


def test_streams_marked_default_else_first_else_chosen(tmp_path, capsys):
    marked = write_two_streams(tmp_path / "marked.mkv", [(64, 48), (32, 24)], default=1)
    info = probe(marked)
    assert (info.video.index, info.video.width, info.audio.index) == (1, 32, 3)
    assert info.video_streams == [0, 1] and info.audio_streams == [2, 3]
    # no stream marked: the first of each kind, not FFmpeg's "best" (the largest)
    unmarked = write_two_streams(tmp_path / "unmarked.mkv", [(32, 24), (64, 48)], default=None)
    clip = read_clip(unmarked, [0.5], 0.0, 0.5)
    assert (clip.info.video.index, clip.info.audio.index) == (0, 2)
    assert abs(int(clip.rgb[0].mean()) - 50) < 10 and _tone(clip.audio) == pytest.approx(300, abs=10)
    # chosen by index
    clip = read_clip(unmarked, [0.5], 0.0, 0.5, video_stream=1, audio_stream=3)
    assert clip.rgb.shape[1:3] == (48, 64) and abs(int(clip.rgb[0].mean()) - 200) < 10
    assert _tone(clip.audio) == pytest.approx(2000, abs=10)
    with pytest.raises(DecodeError, match=r"no video stream with index 2 \(streams: 0 \(video\), 1 \(video\)"):
        probe(unmarked, video_stream=2)
    assert main(["data", "probe", str(unmarked), "--video-stream", "1", "--audio-stream", "3"]) == 0
    out = capsys.readouterr().out
    assert "video: stream 1 of [0, 1]: h264 64x48" in out and "audio: stream 3 of [2, 3]" in out


# ---------------------------------------------------------------------------- unreadable clips
@pytest.fixture()
def bad_folder(tmp_path) -> Path:
    """Two good videos and three unreadable ones (random bytes) in one class folder."""
    root = tmp_path / "bad"
    (root / "a").mkdir(parents=True)
    for k in range(2):
        write_video(root / "a" / f"good{k}.mp4", seconds=1.0)
    for k in range(3):
        (root / "a" / f"bad{k}.mp4").write_bytes(np.random.default_rng(k).bytes(3000))
    return root


def test_worker_error_shows_the_library_message_first(bad_folder, capsys):
    code = main(["data", "stats", "--format", "folder", str(bad_folder), "--num-workers", "1",
                 "--set=data.audio_seconds=1.0", "--set=data.num_mel_bins=32"])
    assert code == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("mbt data: error: ") and "bad0.mp4 (annotation " in first
    assert "cannot read the clip: DecodeError" in first and "Traceback" not in first


def test_eval_lists_the_damaged_files_it_scored(tmp_path, capsys):
    """`mbt eval` scores clips that decode with concealed damage (as training uses them) but
    never silently: metrics.json counts and names them, damaged.csv lists them, stderr warns."""
    import csv
    import json

    import mbt
    from mbt.demo.run import _demo_data, _demo_model

    from .conftest import randomize

    cfg = _demo_model().replace(num_classes=2, label_names=("broken", "clean"))
    randomize(mbt.MBT(cfg), seed=0).save_pretrained(tmp_path / "m", data_config=_demo_data())
    damaged = _damaged_copy(tmp_path)
    (tmp_path / "clean.mp4").write_bytes(H264.read_bytes())
    (tmp_path / "test.csv").write_text("path,label\nclean.mp4,clean\ndamaged.mp4,broken\n")
    out = tmp_path / "out"
    assert main(["eval", str(tmp_path / "m"), "--data", str(tmp_path / "test.csv"), "--format", "csv",
                 "--out", str(out), "--no-progress", "--num-workers", "0"]) == 0
    err = capsys.readouterr().err
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_videos"] == 2 and report["metrics"]["num_damaged_files"] == 1
    assert len(report["damaged_files"]) == 1 and report["damaged_files"][0].startswith(f"{damaged}: ")
    assert "decode error" in report["damaged_files"][0]
    with open(out / "damaged.csv", newline="") as f:
        assert [r["path"] for r in csv.DictReader(f)] == [str(damaged)]
    assert "warning: 1 file(s) decoded with concealed damage were evaluated" in err and "damaged.csv" in err
    # a clean evaluation writes no list and says nothing
    (tmp_path / "test.csv").write_text("path,label\nclean.mp4,clean\n")
    assert main(["eval", str(tmp_path / "m"), "--data", str(tmp_path / "test.csv"), "--format", "csv",
                 "--out", str(tmp_path / "clean"), "--no-progress", "--num-workers", "0"]) == 0
    assert "concealed damage" not in capsys.readouterr().err and not (tmp_path / "clean" / "damaged.csv").exists()
    assert json.loads((tmp_path / "clean" / "metrics.json").read_text())["damaged_files"] == []
    # the labels map to the model's own classes: a label it does not know is named, not renumbered
    (tmp_path / "test.csv").write_text("path,label\nclean.mp4,clean\nclean.mp4,rooster\n")
    assert main(["eval", str(tmp_path / "m"), "--data", str(tmp_path / "test.csv"), "--format", "csv",
                 "--out", str(tmp_path / "unknown"), "--no-progress", "--num-workers", "0"]) == 1
    err = capsys.readouterr().err
    assert "test.csv:3" in err and "rooster" in err

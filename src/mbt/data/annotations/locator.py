"""Finding the media file of an annotation row.

Locating media. Formats that name YouTube clips (AudioSet, VGGSound, Kinetics, Kinetics-Sounds)
or EPIC videos are matched to files under `root` by trying naming patterns in order; the first
that exists wins. A pattern is a `str.format` template over the fields of a row, written without
an extension (any media extension matches; `ext` restricts it) or with one (exact match):

    audioset          {ytid}_{start:06d}, {ytid}_{start_ms}_{end_ms}, Y{ytid}, {ytid}
    vggsound          {ytid}_{start:06d}, {ytid}        (also vggsounder)
    kinetics          {label}/{ytid}_{start:06d}_{end:06d}, {label_}/..., {ytid}_{start:06d}_{end:06d}, {ytid}
    kinetics-sounds   {clip_id}, {label}/{clip_id}, {label_}/{clip_id}
    epic100           {participant}/videos/{video_id}, {participant}/{video_id}, {video_id}

Fields: `ytid`, `start`, `end` (int when whole seconds), `start_ms`, `end_ms`, `label`, `label_`
(spaces -> underscores), `split`, `clip_id` (the row's own id), `participant`, `video_id`,
`narration_id`. `path_pattern` replaces the list with one pattern of your own.

Segments. For the YouTube-clip formats the stored files are usually the cut segment (`trimmed=True`,
the default): the item's segment is then `[0, end - start]` of the file. With `trimmed=False` the
files are the full source videos and the segment is `[start, end]`. EPIC segments are always cut
from the long videos by `start_timestamp`/`stop_timestamp`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import AnnotationError, PathLike

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ts", ".3gp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS
"""Files recognised as media (compared case-insensitively, so EPIC's `.MP4` matches)."""

DEFAULT_PATTERNS: dict[str, tuple[str, ...]] = {
    "audioset": ("{ytid}_{start:06d}", "{ytid}_{start_ms}_{end_ms}", "Y{ytid}", "{ytid}"),
    "vggsound": ("{ytid}_{start:06d}", "{ytid}"),
    "kinetics": (
        "{label}/{ytid}_{start:06d}_{end:06d}",
        "{label_}/{ytid}_{start:06d}_{end:06d}",
        "{ytid}_{start:06d}_{end:06d}",
        "{ytid}",
    ),
    "kinetics-sounds": ("{clip_id}", "{label}/{clip_id}", "{label_}/{clip_id}"),
    "epic100": ("{participant}/videos/{video_id}", "{participant}/{video_id}", "{video_id}"),
    "moments-in-time": ("{path}",),
}

def ext_ok(name: str, ext: str | None) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix == ("." + ext.lstrip(".")).lower() if ext else suffix in MEDIA_EXTENSIONS


class MediaLocator:
    """Finds the media file of a row under `root` by trying naming patterns (module docstring)."""

    def __init__(
        self,
        root: PathLike | None,
        patterns: Sequence[str],
        ext: str | None = None,
        user_pattern: bool = False,
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.patterns = tuple(patterns)
        self.ext = ext.lstrip(".") if ext else None
        self.user_pattern = user_pattern
        self._files: set[str] | None = None
        self._stems: dict[str, str] = {}
        if self.root is not None and not self.root.is_dir():
            raise AnnotationError(f"media root {self.root} is not a folder")

    def _index(self) -> set[str]:
        """All media files under root (relative posix paths), walked once."""
        if self._files is None:
            assert self.root is not None
            files: set[str] = set()
            for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel_dir = os.path.relpath(dirpath, self.root)
                for name in sorted(filenames):
                    if name.startswith(".") or not ext_ok(name, self.ext):
                        continue
                    rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                    files.add(rel)
                    stem = os.path.splitext(rel)[0]
                    # When a stem exists with several extensions the first video extension wins.
                    old = self._stems.get(stem)
                    if old is None or _ext_rank(rel) < _ext_rank(old):
                        self._stems[stem] = rel
            self._files = files
        return self._files

    def _format(self, pattern: str, fields: dict[str, Any]) -> str | None:
        try:
            return pattern.format(**fields)
        except KeyError as e:
            if self.user_pattern:
                raise AnnotationError(
                    f"path pattern {pattern!r} uses unknown field {e}; fields of this format: "
                    f"{sorted(fields)}"
                ) from None
            raise
        except ValueError:  # e.g. {start:06d} on a fractional start: the pattern does not apply
            if self.user_pattern:
                raise
            return None

    def locate(self, fields: dict[str, Any]) -> tuple[str, bool | None]:
        """(path, found); without a root the first pattern's path, unchecked (found None)."""
        names = [n for n in (self._format(p, fields) for p in self.patterns) if n is not None]
        if not names:
            raise ValueError(f"no path pattern applies to fields {fields}")
        if self.root is None:
            return _with_ext(names[0], self.ext), None
        files = self._index()
        for name in names:
            if os.path.splitext(name)[1].lower() in MEDIA_EXTENSIONS:
                if name in files:
                    return str(self.root / name), True
            elif name in self._stems:
                return str(self.root / self._stems[name]), True
        return str(self.root / _with_ext(names[0], self.ext)), False


def _ext_rank(name: str) -> int:
    suffix = os.path.splitext(name)[1].lower()
    return MEDIA_EXTENSIONS.index(suffix) if suffix in MEDIA_EXTENSIONS else len(MEDIA_EXTENSIONS)


def _with_ext(name: str, ext: str | None) -> str:
    if os.path.splitext(name)[1].lower() in MEDIA_EXTENSIONS:
        return name
    return f"{name}.{ext or 'mp4'}"


def locator_for(
    fmt: str, root: PathLike | None, path_pattern: str | None, ext: str | None
) -> MediaLocator:
    if path_pattern:
        return MediaLocator(root, [path_pattern], ext, user_pattern=True)
    return MediaLocator(root, DEFAULT_PATTERNS[fmt], ext)


def time_fields(start: int | float, end: int | float) -> dict[str, Any]:
    return {"start": start, "end": end, "start_ms": round(start * 1000), "end_ms": round(end * 1000)}


def file_segment(start: float, end: float, trimmed: bool) -> tuple[float, float]:
    """Segment in file time: a trimmed clip file holds just [start, end] of its source."""
    return (0.0, float(end - start)) if trimmed else (float(start), float(end))



"""Split a folder of class sub-folders into train/ and test/ (symbolic links, nothing copied).

    python examples/own_videos/split.py all_videos my_videos --test-fraction 0.2

A video goes to test/ when a seeded hash of its path falls below the fraction (as
`dataset.val_fraction` holds out validation): the split is the same on every run and does not
change when videos are added.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mbt.data.subsets import id_fraction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="folder with one sub-folder of videos per class")
    parser.add_argument("out", type=Path, help="output folder: out/train/<class>/..., out/test/<class>/...")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of each class's videos for test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    args = parser.parse_args()
    counts = {"train": 0, "test": 0}
    for video in sorted(p for p in args.source.glob("*/*") if p.is_file()):
        relative = video.relative_to(args.source)
        split = "test" if id_fraction(str(relative), args.seed) < args.test_fraction else "train"
        link = args.out / split / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(video.resolve())
        counts[split] += 1
    print(f"{args.out}: {counts['train']} train and {counts['test']} test videos")


if __name__ == "__main__":
    main()

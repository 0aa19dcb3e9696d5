"""The one registry of annotation formats (`mbt.data.annotations.ANNOTATION_FORMATS`): what
`load_annotations`, the command line and `DatasetConfig` read."""

from __future__ import annotations

import contextlib
import inspect
import io

import pytest

from mbt.cli import main
from mbt.data.annotations import ANNOTATION_FORMATS, FORMATS, AnnotationError, load_annotations
from mbt.data.annotations.formats import OPTIONS
from mbt.errors import ConfigError
from mbt.train.config import DATASET_FORMATS, DatasetConfig
from mbt.train.data import NAMED_CLASS_FORMATS


@pytest.mark.parametrize("name", list(ANNOTATION_FORMATS))
def test_each_format_passes_only_options_its_parser_takes(name):
    fmt = ANNOTATION_FORMATS[name]
    params = inspect.signature(fmt.parse).parameters
    assert fmt.name == name and set(fmt.options) <= set(OPTIONS) and fmt.doc
    assert "skip_bad" in params
    for option in fmt.options:
        assert fmt.keywords.get(option, option) in params, f"{name}: parser has no keyword for {option}"
    if fmt.named_classes:  # the class list may be a list of names
        assert "Sequence[str]" in str(params[fmt.keywords.get("classes", "classes")].annotation)


def test_an_option_the_format_does_not_take_is_refused_by_name(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.mp4,cat\n")
    assert len(load_annotations("csv", [manifest]).items) == 1
    # before the registry, `ext` was silently dropped for csv/jsonl manifests
    with pytest.raises(AnnotationError, match=r"format 'csv' does not take \['ext'\] \(it takes \['classes', 'root'\]"):
        load_annotations("csv", [manifest], ext="mp4")
    with pytest.raises(AnnotationError, match=r"does not take \['path_pattern', 'trimmed'\]"):
        load_annotations("folder", [tmp_path], path_pattern="{ytid}", trimmed=False)
    with pytest.raises(AnnotationError, match="takes one annotation file, got 2"):
        load_annotations("csv", [manifest, manifest])


def test_the_command_line_and_the_config_offer_the_registered_formats():
    assert tuple(ANNOTATION_FORMATS) == FORMATS
    # webdataset tars name their classes in dataset.classes too
    assert set(NAMED_CLASS_FORMATS) == {n for n, f in ANNOTATION_FORMATS.items() if f.named_classes} | {"webdataset"}
    assert set(FORMATS) < set(DATASET_FORMATS) and {"shards", "webdataset", "synthetic"} < set(DATASET_FORMATS)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["data", "summary", "--help"])
    text = "".join(out.getvalue().split())  # argparse wraps lines (at hyphens too)
    for fmt in ANNOTATION_FORMATS.values():
        assert "".join(f"{fmt.name}: {fmt.doc}".split()) in text
    with pytest.raises(ConfigError, match=r"format: expected one of \[.*'moments-in-time', 'shards', 'webdataset', "
                                          r"'synthetic'\], got 'youtube8m'"):
        DatasetConfig(format="youtube8m")

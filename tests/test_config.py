"""The params schema (params.yaml + settings.yaml): every bad value fails before any work, naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params, merge_files, parse_params, read_param_files

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = merge_files(read_param_files(ROOT / "params.yaml"))  # with settings.yaml


def with_change(path: str, value, raw: dict = DEFAULT) -> dict:
    """A copy of `raw` (the default params) with `path` (dotted) set to value."""
    raw = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[last] = value
    return raw


def error_of(raw) -> str:
    with pytest.raises(ParamsError) as exc:
        parse_params(raw)
    return str(exc.value)


def test_the_default_params_file_is_valid_and_offline():
    p = load_params(ROOT / "params.yaml")
    assert p.download.sources == ["vizdoom:my_way_home"]
    assert p.download.recorder.episodes >= 3  # train/val/test all non-empty


def test_unknown_key_is_named_with_a_suggestion():
    raw = with_change("download.max_heigth", 480)
    assert "download.max_heigth: unknown key (did you mean max_height?)" in error_of(raw)


def test_unknown_nested_key_is_named_with_its_full_path():
    assert "download.recorder.episode: unknown key (did you mean episodes?)" in error_of(
        with_change("download.recorder.episode", 2)
    )


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("download.max_videos", "many", "download.max_videos: "),
        ("download.max_height", 10, "download.max_height: "),
        ("download.retries", -1, "download.retries: "),
        ("download.sources", [], "download.sources: "),
        ("download.sources", ["ftp://example.com/a.mp4"], "download.sources: [0] 'ftp://example.com/a.mp4'"),
        ("download.rate_limit", "fast", "download.rate_limit: expected bytes per second"),
        ("download.recorder.atari.fps", 7, "download.recorder.atari.fps: must divide 60"),
        ("download.recorder.atari.sticky_prob", 1.0, "download.recorder.atari.sticky_prob: "),
        ("download.recorder.vizdoom.frame_skip", 3, "download.recorder.vizdoom.frame_skip: must be 1, 2, 4 or 8"),
        ("download.recorder.crafter.agent", "smart", "download.recorder.crafter.agent: "),
        ("extract.resize_mode", "stretch", "extract.resize_mode: "),
        ("tokenizer.downsample", 3, "tokenizer.downsample: must be a power of two"),
        ("train.gapped_ratio", 1.5, "train.gapped_ratio: "),
        ("train.gapped_span", 0, "train.gapped_span: "),
    ],
)
def test_wrong_type_or_range_names_the_key(path, value, expected):
    assert expected in error_of(with_change(path, value))


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"download.sleep_interval": 10, "download.max_sleep_interval": 5}, "max_sleep_interval must be >= sleep_interval"),
        ({"extract.splits": {"train": 0.5, "val": 0.1, "test": 0.1}}, "extract.splits: train + val + test must be 1"),
        ({"model.heads": 3}, "dim (128) must be divisible by heads (3)"),
        ({"train.seq_len_long": 8}, "seq_len_long (8) must be >= seq_len_short"),
        ({"train.gapped_span": 8}, "train: gapped_span (8) must be >= seq_len_short (36)"),
        ({"train.long_ratio": 0.8, "train.gapped_ratio": 0.25}, "train: long_ratio (0.8) + gapped_ratio (0.25) must be <= 1"),
        ({"extract.size": 66}, "tokenizer.downsample: 4 does not divide extract.size (66)"),
    ],
)
def test_inconsistent_values_are_named(changes, expected):
    raw = DEFAULT
    for path, value in changes.items():
        raw = with_change(path, value, raw)
    assert expected in error_of(raw)


def test_all_errors_are_reported_at_once():
    raw = with_change("extract.fps", -1, with_change("download.max_videos", 0))
    msg = error_of(raw)
    assert "download.max_videos" in msg and "extract.fps" in msg


def test_missing_file_and_bad_yaml_name_the_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("download: [unclosed")
    with pytest.raises(ParamsError, match="params.yaml: not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_missing_download_section_is_named():
    raw = {k: v for k, v in DEFAULT.items() if k != "download"}
    assert "download: required key is missing" in error_of(raw)


def test_a_stage_with_bad_params_exits_naming_the_key_without_a_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "params.yaml").write_text((repo / "params.yaml").read_text())
    settings = (repo / "settings.yaml").read_text().replace("  max_height: 360", "  max_heigth: 360")
    (tmp_path / "settings.yaml").write_text(settings)
    proc = subprocess.run([sys.executable, "-m", "stages.download"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(repo), "PATH": ""}, timeout=120)
    assert proc.returncode == 1
    assert "download.max_heigth: unknown key (did you mean max_height?) [settings.yaml]" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing was started


def test_recorder_defaults_in_the_schema_are_those_of_params_yaml():
    from pipeline.config import RecorderParams

    assert RecorderParams().model_dump() == DEFAULT["download"]["recorder"]


def test_a_misspelt_key_of_a_recorder_subsection_is_named_with_a_suggestion():
    assert "download.recorder.vizdoom.framskip: unknown key (did you mean frame_skip?)" in error_of(
        with_change("download.recorder.vizdoom.framskip", 2)
    )


def test_extract_fps_null_means_each_videos_own_rate():
    assert load_params(ROOT / "params.yaml").extract.fps is None
    assert parse_params(with_change("extract.fps", 20)).extract.fps == 20


# ---------------------------------------------------------------------------------------------
# Two files, one schema
# ---------------------------------------------------------------------------------------------
def files_of(tmp_path, params: dict, settings: dict) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump(settings))
    return tmp_path / "params.yaml"


def split_defaults() -> tuple[dict, dict]:
    files = read_param_files(ROOT / "params.yaml")
    return copy.deepcopy(files["params.yaml"]), copy.deepcopy(files["settings.yaml"])


def test_params_yaml_and_settings_yaml_together_are_the_whole_schema():
    params, settings = split_defaults()
    assert params and settings and set(params) | set(settings) == set(DEFAULT)
    with pytest.raises(ParamsError, match="train.weight_decay: required key is missing"):
        parse_params(params)  # params.yaml alone is not enough


def test_a_key_set_in_both_files_is_named_with_both_files(tmp_path):
    params, settings = split_defaults()
    settings["train"]["seq_len_long"] = 64
    with pytest.raises(ParamsError, match=r"train.seq_len_long: set in both params.yaml and settings.yaml \(keep one\)"):
        load_params(files_of(tmp_path, params, settings))


def test_a_bad_key_is_named_with_its_file(tmp_path):
    params, settings = split_defaults()
    params["train"]["seq_len_lon"] = 64
    settings["model"]["heads"] = "four"
    msg = str(pytest.raises(ParamsError, load_params, files_of(tmp_path, params, settings)).value)
    assert "train.seq_len_lon: unknown key (did you mean seq_len_long?) [params.yaml]" in msg
    assert "model.heads: " in msg and "[settings.yaml]" in msg


def test_a_key_may_move_between_the_files(tmp_path):
    params, settings = split_defaults()
    params["model"]["heads"] = settings["model"].pop("heads")  # e.g. to give it a column in `dvc exp show`
    settings["train"]["steps"] = params["train"].pop("steps")
    assert load_params(files_of(tmp_path, params, settings)) == load_params(ROOT / "params.yaml")


# ---------------------------------------------------------------------------------------------
# One source of truth: params.yaml + settings.yaml set every key; a schema default, where one is kept, is the same
# ---------------------------------------------------------------------------------------------
def _schema_keys(model, raw: dict, validated, path: str = ""):
    """(dotted key, schema field, params.yaml value validated) of every leaf key, nested."""
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        key = f"{path}{name}"
        assert name in raw, f"{key}: in the schema, not in params.yaml or settings.yaml"
        value = getattr(validated, name)
        if isinstance(value, BaseModel) and field.annotation is type(value):
            yield from _schema_keys(type(value), raw[name], value, key + ".")
        else:
            yield key, field, value


def test_params_yaml_sets_every_key_and_every_schema_default_equals_it():
    from pipeline.config import Params

    keys = list(_schema_keys(Params, DEFAULT, load_params(ROOT / "params.yaml")))
    defaults = {key: (field.get_default(call_default_factory=True), value)
                for key, field, value in keys if not field.is_required()}  # fmt: skip
    assert len(keys) > 90 and len(defaults) > 40
    assert {key: pair for key, pair in defaults.items() if pair[0] != pair[1]} == {}


@pytest.mark.parametrize("section", ["seed", "tokenizer", "tokenize", "model", "train"])
def test_the_training_sections_have_no_schema_defaults(section):
    from pipeline.config import Params

    field = Params.model_fields[section]
    assert field.is_required()
    nested = getattr(field.annotation, "model_fields", {})
    assert [k for k, f in nested.items() if not f.is_required()] == []


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"tokenizer.log_every": 0}, "tokenizer.log_every: "),
        ({"tokenize.batch_size": 0}, "tokenize.batch_size: "),
        ({"tokenizer.arch": "transformer", "tokenizer.heads": 3}, "dim (256) must be divisible by heads (3)"),
        ({"tokenizer.patch_size": 5}, "tokenizer.patch_size: 5 does not divide extract.size (64)"),
    ],
)
def test_the_training_and_tokenize_keys_are_validated_by_name(changes, expected):
    raw = DEFAULT
    for path, value in changes.items():
        raw = with_change(path, value, raw)
    assert expected in error_of(raw)


def test_a_missing_training_key_is_named():
    raw = copy.deepcopy(DEFAULT)
    del raw["tokenizer"]["log_every"]
    assert "tokenizer.log_every: required key is missing" in error_of(raw)


# ---------------------------------------------------------------------------------------------
# Every key documents itself (the settings reference is generated from these descriptions)
# ---------------------------------------------------------------------------------------------
def _sections(model, seen: set | None = None):
    """`model` and every Section subclass reachable from its fields' annotations (nested, in
    containers such as dict[str, WorkloadParams] and unions too)."""
    import typing

    from pipeline.config import Section

    seen = set() if seen is None else seen
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, Section):
                _sections(tp, seen)
            stack.extend(typing.get_args(tp))
    return seen


def test_every_field_of_every_section_has_a_description():
    from pipeline.config import Params, WorkloadParams

    sections = _sections(Params)
    assert WorkloadParams in sections and len(sections) >= 14  # nested, and inside dict[str, ...]
    missing = [f"{model.__name__}.{name}" for model in sections for name, field in model.model_fields.items()
               if not (field.description or "").strip()]  # fmt: skip
    assert missing == []

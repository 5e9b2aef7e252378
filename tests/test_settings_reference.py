"""The generated settings reference (docs/hooks.py): every key of the schema, its description and its file."""

from __future__ import annotations

import html
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.config import Params, Section

ROOT = Path(__file__).resolve().parents[1]


def _load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


def leaf_keys(model=Params, path: str = ""):
    """(dotted key, field) of every key of the schema that is not itself a section, nested included."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            yield from leaf_keys(field.annotation, f"{path}{name}.")
        else:
            yield f"{path}{name}", field


def rows(markdown: str) -> dict[str, dict[str, str]]:
    """The table rows of the page: key -> {type, default, file, description}, unescaped as rendered."""
    out = {}
    for line in markdown.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        cells = [html.unescape(c.replace(r"\|", "|").replace(r"\*", "*")) for c in cells]
        key, type_, default, file, description = cells
        out[key.strip("`")] = {"type": type_, "default": default, "file": file, "description": description}
    return out


def keys_in(tree: dict, path: str = "") -> set[str]:
    """Dotted paths of every value a YAML tree sets (mappings that are sections are walked into)."""
    found = set()
    for key, value in tree.items():
        found.add(f"{path}{key}")
        if isinstance(value, dict):
            found |= keys_in(value, f"{path}{key}.")
    return found


@pytest.fixture(scope="module")
def page() -> str:
    return hooks.settings_reference(ROOT)


@pytest.fixture(scope="module")
def table(page) -> dict[str, dict[str, str]]:
    return rows(page)


def test_the_page_is_titled_and_says_how_the_two_files_work(page):
    assert page.startswith("# Settings reference\n")
    intro = page.split("\n## ")[0]
    for phrase in ("one schema", "-S key=value", "-S settings.yaml:key=value", "move", "both"):
        assert phrase in intro


def test_every_leaf_key_of_the_schema_is_named_with_its_description(table):
    keys = dict(leaf_keys())
    assert len(keys) > 100 and "download.recorder.vizdoom.frame_skip" in keys and "benchmark.far.variant" in keys
    assert sorted(set(keys) - set(table)) == []
    for key, field in keys.items():
        assert table[key]["description"] == " ".join(field.description.split()), key


def test_nested_sections_get_their_own_table_not_a_row(page, table):
    for section in ("download.recorder", "download.recorder.vizdoom", "extract.splits", "benchmark.far"):
        assert section not in table
        assert re.search(rf"^#+ {re.escape(section)}$", page, re.M), section
    assert "benchmark.workloads.<name>.context" in table  # the entries of a dict of sections too


def test_keys_are_marked_with_the_file_that_sets_them(table):
    files = {name: yaml.safe_load((ROOT / name).read_text()) for name in ("params.yaml", "settings.yaml")}
    in_params, in_settings = keys_in(files["params.yaml"]), keys_in(files["settings.yaml"])
    leaves = dict(leaf_keys())
    assert {k for k in leaves if k in in_params} >= {"seed", "download.sources", "train.seq_len_long", "benchmark.host"}
    for key in leaves:
        expected = "params.yaml" if key in in_params else "settings.yaml" if key in in_settings else "settings.yaml (default)"
        assert table[key]["file"] == expected, key


def test_a_key_in_neither_file_is_a_settings_default_and_one_in_both_is_flagged(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    settings = yaml.safe_load((ROOT / "settings.yaml").read_text())
    del settings["benchmark"]["far"]["sampling_steps"]
    settings["train"]["seq_len_long"] = params["train"]["seq_len_long"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump(settings))
    table = rows(hooks.settings_reference(tmp_path))
    assert table["benchmark.far.sampling_steps"]["file"] == "settings.yaml (default)"
    assert table["benchmark.far.sampling_steps"]["default"] == "20"  # the schema's own default
    assert "params.yaml and settings.yaml" in table["train.seq_len_long"]["file"]


def test_types_and_defaults_read_as_yaml_users_write_them(table):
    assert table["seed"]["type"] == "int"
    assert table["download.max_height"] == {**table["download.max_height"], "type": "int", "default": "360"}
    assert table["download.rate_limit"]["type"] == "str | null"
    assert table["extract.resize_mode"]["type"] == "center_crop | letterbox | squash"
    assert table["benchmark.modes"] == {**table["benchmark.modes"], "type": "list[recompute | kv]", "default": "[kv]"}
    assert table["benchmark.budgets"]["type"] == "dict[str, int | null]"
    assert table["benchmark.budgets"]["default"] == "{full: null, medium: 8, tight: 4}"
    assert table["download.archive"]["default"] == "true"
    assert table["train.val_taus"]["type"] == "list[float]"
    for row in table.values():
        assert not re.search(r"typing\.|<class|Literal\[|NoneType|Params\b", row["type"]), row


def test_the_markdown_renders_every_cell_intact(page):
    markdown = pytest.importorskip("markdown")
    rendered = markdown.markdown(page, extensions=["tables", "toc"])
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", rendered, re.S)]
    assert len(cells) == 5 * len(rows(page))  # no | in a description or type split a row
    for key, field in leaf_keys():
        assert " ".join(field.description.split()) in cells, key


def test_on_files_adds_the_generated_page(tmp_path):
    pytest.importorskip("mkdocs")
    from mkdocs.config import load_config
    from mkdocs.structure.files import Files

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# x\n")
    for name in ("params.yaml", "settings.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "mkdocs.yml").write_text(
        f"site_name: t\nnav: [index.md, settings.md]\nhooks: [{ROOT / 'docs' / 'hooks.py'}]\n")
    config = load_config(config_file=str(tmp_path / "mkdocs.yml"))
    files = config.plugins.on_files(Files([]), config=config)  # as mkdocs build runs the hook
    page = files.get_file_from_path("settings.md")
    assert page is not None and page.content_string == hooks.settings_reference(tmp_path)

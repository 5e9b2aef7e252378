"""MkDocs hooks: the generated page ``settings.md`` ("Settings reference"), built from the schema.

Every key of params.yaml and settings.yaml, one table per section (nested sections too), with its
type, default, the file that sets it and its description, all read from ``pipeline.config.Params``
and the two YAML files, so the page cannot drift from the code. mkdocs.yml lists this module under
``hooks:``; :func:`settings_reference` is the markdown itself (tests call it).
"""

from __future__ import annotations

import html
import logging
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

import pipeline.config as schema
from pipeline.config import PARAMS_FILE, SETTINGS_FILE, Params, Section

PAGE = "settings.md"
TITLE = "Settings reference"
NO_FILE = f"{SETTINGS_FILE} (default)"  # a key neither file sets: the schema's default applies

log = logging.getLogger(f"mkdocs.hooks.{__name__}")


# --------------------------------------------------------------------------------------------
# the mkdocs events
# --------------------------------------------------------------------------------------------
def on_files(files, config):
    """Add the generated settings.md (replacing a settings.md of the docs directory, if any)."""
    from mkdocs.structure.files import File

    root = project_root(Path(config.config_file_path).parent if config.config_file_path else None)
    for file in list(files):  # this module, when it sits in docs_dir, is no page and no asset of the site
        if file.abs_src_path and Path(file.abs_src_path).resolve() == Path(__file__).resolve():
            files.remove(file)
    existing = files.get_file_from_path(PAGE)
    if existing is not None:
        log.info("%s: replaced by the page generated from pipeline/config.py", PAGE)
        files.remove(existing)
    files.append(File.generated(config, PAGE, content=settings_reference(root)))
    return files


def on_serve(server, config, builder):
    """`mkdocs serve`: rebuild when a parameter file changes (a schema change needs a restart: the
    server keeps the pipeline.config it imported)."""
    root = project_root(Path(config.config_file_path).parent if config.config_file_path else None)
    for path in (root / PARAMS_FILE, root / SETTINGS_FILE):
        if path.exists():
            server.watch(str(path))
    return server


def project_root(*candidates: Path | None) -> Path:
    """The directory holding params.yaml: the first candidate that has one, else the working
    directory, else the project of the installed `pipeline` package."""
    for path in (*candidates, Path.cwd(), Path(schema.__file__).resolve().parents[1]):
        if path is not None and (Path(path) / PARAMS_FILE).is_file():
            return Path(path)
    raise FileNotFoundError(f"{PARAMS_FILE}: not found beside mkdocs.yml, in {Path.cwd()} or beside pipeline/")


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------
INTRO = f"""\
# {TITLE}

`{PARAMS_FILE}` and `{SETTINGS_FILE}` at the project root form **one schema** (`pipeline/config.py`):
the two files are merged into one tree and validated together before any stage does work, so an unknown
key, a wrong type or an inconsistent value fails at once, naming the key and its file.
`{PARAMS_FILE}` holds the keys experiments sweep and compare (DVC params: a column each in
`dvc exp show`); `{SETTINGS_FILE}` holds the rest, in the same sections.

- `dvc exp run -S key=value` edits {PARAMS_FILE}, e.g. `-S train.seq_len_long=80`;
  `dvc exp run -S {SETTINGS_FILE}:key=value` edits {SETTINGS_FILE}, e.g. `-S {SETTINGS_FILE}:train.batch_size_short=16`.
- A key may **move** between the two files (e.g. to give a key you sweep its own column): nothing else changes.
- A key set in **both** files is an error.

Columns: **key**, the dotted path to use with `-S`; **type**, what the value must be (`a | b`: one of these,
`null`: YAML's null); **default**, the value the project's files set (else the schema's default);
**file**, the file that sets the key now ("{NO_FILE}": neither does, so the schema's default applies, and
the key belongs to {SETTINGS_FILE} once set); **description**, what the key does.
This page is generated from the schema and the two files.
"""


def settings_reference(root: str | Path | None = None) -> str:
    """The markdown of the settings reference: the intro, then one table per section."""
    root = project_root(Path(root) if root is not None else None)
    files = {name: _read(root / name) for name in (PARAMS_FILE, SETTINGS_FILE)}
    parts = [INTRO]
    top = [(name, field) for name, field in Params.model_fields.items() if _section_of(field.annotation) is None]
    if top:
        parts.append(_table("Top level", "keys outside any section", top, (), files, level=2))
    for name, field in Params.model_fields.items():
        section = _section_of(field.annotation)
        if section is not None:
            parts.extend(_section_tables(section, (name,), field.description, files, level=2))
    return "\n".join(parts)


def _section_tables(model: type[BaseModel], loc: tuple, about: str | None, files: dict, level: int) -> list[str]:
    """The table of a section's keys, then its nested sections' (and dict-of-section entries') tables."""
    fields = list(model.model_fields.items())
    rows = [(n, f) for n, f in fields if _section_of(f.annotation) is None]
    out = [_table(".".join(loc), about or _docstring(model), rows, loc, files, level)]
    for name, field in fields:
        section = _section_of(field.annotation)
        if section is not None:
            out.extend(_section_tables(section, (*loc, name), field.description, files, min(level + 1, 6)))
        entry = _dict_entry_section(field.annotation)
        if entry is not None:
            out.append(_entry_table(entry, (*loc, name), field, files, min(level + 1, 6)))
    return out


def _table(title: str, about: str | None, rows: list, loc: tuple, files: dict, level: int) -> str:
    lines = [f"{'#' * level} {title}", ""]
    if about:
        lines += [_cell(about), ""]
    lines += ["| key | type | default | file | description |", "| --- | --- | --- | --- | --- |"]
    for name, field in rows:
        path = (*loc, name)
        default = _default(field, _value_in(files, path))
        lines.append(f"| `{'.'.join(path)}` | {_cell(type_name(field.annotation))} | {_cell(default)} "
                     f"| {_file_of(files, path)} | {_cell(field.description or '')} |")
    return "\n".join(lines) + "\n"


def _entry_table(model: type[BaseModel], loc: tuple, parent, files: dict, level: int) -> str:
    """The keys of each entry of a dict-of-sections key (e.g. benchmark.workloads.<name>.context)."""
    key = ".".join(loc)
    about = f"{_docstring(model)} Each entry of `{key}` (named as you like) holds these keys.".strip()
    lines = [f"{'#' * level} {key}.&lt;name&gt;", "", _cell(about), "",
             "| key | type | default | file | description |", "| --- | --- | --- | --- | --- |"]
    entries = _value_in(files, loc)
    if entries is PydanticUndefined and not parent.is_required():
        entries = to_jsonable_python(parent.get_default(call_default_factory=True))
    for name, field in model.model_fields.items():
        default = "—"
        if isinstance(entries, dict) and entries:
            default = yaml_value({k: (v or {}).get(name) for k, v in entries.items()})
        lines.append(f"| `{key}.<name>.{name}` | {_cell(type_name(field.annotation))} | {_cell(default)} "
                     f"| {_file_of(files, loc)} | {_cell(field.description or '')} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
def type_name(tp: Any) -> str:
    """A readable type: `int`, `list[str]`, `a | b` for a Literal, `str | null` for an optional value."""
    if tp is type(None) or tp is None:
        return "null"
    if tp is Ellipsis:
        return "..."
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _section_label(tp)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    """A value as it is written in YAML, on one line (`null`, `true`, `[kv]`, `{full: null, tight: 4}`)."""
    text = yaml.safe_dump(to_jsonable_python(value), default_flow_style=True, sort_keys=False, width=10**6)
    return text.strip().removesuffix("...").strip()


def _default(field, file_value: Any) -> str:
    if file_value is not PydanticUndefined:
        return yaml_value(file_value)
    if field.is_required():
        return "— (required)"
    return yaml_value(field.get_default(call_default_factory=True))


def _cell(text: str) -> str:
    """Text for a markdown table cell: HTML-escaped outside `code` spans, `|` and `*` escaped, one line."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", " ".join(str(text).split()))):
        if i % 2 == 0:
            part = html.escape(part, quote=False).replace("*", r"\*")
        out.append(part.replace("|", r"\|"))
    return "".join(out)


def _docstring(model: type[BaseModel]) -> str:
    doc = model.__doc__ or ""
    return " ".join(doc.split("\n\n")[0].split()) if doc and model.__doc__ != Section.__doc__ else ""


def _section_label(model: type[BaseModel]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", model.__name__.removesuffix("Params")).lower().replace(" ", "_") or "section"


# --------------------------------------------------------------------------------------------
# the schema and the files
# --------------------------------------------------------------------------------------------
def _section_of(tp: Any) -> type[Section] | None:
    """The Section class of a field that is a nested section (its keys get their own table)."""
    return tp if isinstance(tp, type) and issubclass(tp, Section) else None


def _dict_entry_section(tp: Any) -> type[Section] | None:
    """The Section class of a `dict[str, SomeSection]` field's values, if it is one."""
    if typing.get_origin(tp) is dict:
        args = typing.get_args(tp)
        return _section_of(args[1]) if len(args) == 2 else None
    return None


def _read(path: Path) -> dict:
    tree = yaml.safe_load(path.read_text()) if path.is_file() else None
    return tree if isinstance(tree, dict) else {}


def _value_in(files: dict[str, dict], loc: tuple) -> Any:
    for tree in files.values():
        node = tree
        for part in loc:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return node
    return PydanticUndefined


def _file_of(files: dict[str, dict], loc: tuple) -> str:
    holders = [name for name, tree in files.items() if _value_in({name: tree}, loc) is not PydanticUndefined]
    if len(holders) > 1:
        return f"{' and '.join(holders)} (error: keep one)"
    return holders[0] if holders else NO_FILE

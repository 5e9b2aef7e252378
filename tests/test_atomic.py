import json

import pytest

from pipeline.atomic import (
    TMP_MARK,
    atomic_dir,
    atomic_file,
    remove_stale_tmp,
    write_json,
)


def test_atomic_dir_replaces_previous_result_only_on_success(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (final / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("half-written")
            raise RuntimeError("crash mid-write")
    # the previous complete result is untouched and no temporary sibling survives
    assert (final / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_file_leaves_nothing_after_keyboard_interrupt(tmp_path):
    final = tmp_path / "x.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(final) as tmp:
            tmp.write_text("{")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_write_json_round_trips(tmp_path):
    write_json(tmp_path / "m.json", {"psnr": 20.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"psnr": 20.5}


def test_remove_stale_tmp_deletes_only_leftovers(tmp_path):
    (tmp_path / f"frames.zarr{TMP_MARK}123-abc").mkdir()
    (tmp_path / f"x.json{TMP_MARK}9-ff").write_text("")
    (tmp_path / "keep.json").write_text("{}")
    remove_stale_tmp(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.data.latent_windows import LatentWindows
from pipeline.data.stores import (
    ShardedArrayWriter,
    StoreError,
    list_videos,
    main,
    read_actions,
    read_array,
    read_poses,
    store_summary,
    verify_store,
)
from pipeline.data.streaming import SplitIndex
from tests.builders import write_frames_store

REPO = Path(__file__).resolve().parents[2]


def make_store(path: Path, videos=(("a", 70, "train"), ("b", 20, "val"), ("c", 33, "test")), actions=True) -> Path:
    root = zarr.open_group(str(path), mode="w")
    rng = np.random.default_rng(0)
    for vid, n, split in videos:
        g = root.create_group(vid)
        w = ShardedArrayWriter(g, "frames", (8, 8, 3), np.uint8, chunk_frames=4, shard_frames=16)
        for start in range(0, n, 5):  # odd-sized appends across chunk and shard borders
            w.append(rng.integers(0, 255, (min(5, n - start), 8, 8, 3), dtype=np.uint8))
        assert w.close() == n
        if actions:
            g.create_array("actions", data=np.arange(n, dtype=np.int64), chunks=(n,))
        g.attrs.update(fps=20.0, source=vid, split=split, source_size=[64, 48], crop_box=[8, 0, 56, 48],
                       n_frames=n, source_sha256="0" * 64, **({"n_actions": 18} if actions else {}))
    return path


def test_writer_streams_whole_shards_and_reads_back_what_was_appended(tmp_path):
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    w = ShardedArrayWriter(g, "x", (2,), np.int64, chunk_frames=4, shard_frames=8)
    data = np.arange(46).reshape(23, 2)
    w.append(data[:5])
    assert w.n_frames == 0  # nothing written until a shard is full
    w.append(data[5:19])
    assert w.n_frames == 16  # two whole shards handed to the writer thread, 3 frames buffered
    w.append(data[19:])
    assert w.close() == 23
    np.testing.assert_array_equal(g["x"][:], data)
    assert sum(p.is_file() for p in (tmp_path / "s.zarr" / "x" / "c").rglob("*")) == 3  # one file per shard


def test_a_writer_left_by_an_error_writes_nothing_more(tmp_path):
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    with pytest.raises(KeyboardInterrupt):
        with ShardedArrayWriter(g, "x", (2,), np.int64, chunk_frames=4, shard_frames=8) as w:
            w.append(np.ones((13, 2), dtype=np.int64))  # one shard in flight, 5 frames buffered
            raise KeyboardInterrupt
    assert g["x"].shape[0] == 8  # the shard in flight was finished, the buffered frames dropped
    assert sum(p.is_file() for p in (tmp_path / "s.zarr" / "x" / "c").rglob("*")) == 1


def test_a_sound_store_verifies_clean_and_lists_its_videos(tmp_path):
    store = make_store(tmp_path / "f.zarr")
    assert verify_store(store) == []
    assert [(v.id, v.split, v.n_frames) for v in list_videos(store)] == [("a", "train", 70), ("b", "val", 20), ("c", "test", 33)]
    assert [v.id for v in list_videos(store, split="val")] == ["b"]


def test_verify_finds_a_missing_shard_that_zarr_would_read_as_zeros(tmp_path):
    store = make_store(tmp_path / "f.zarr")
    (store / "a" / "frames" / "c" / "2" / "0" / "0" / "0").unlink()
    assert zarr.open_group(str(store), mode="r")["a"]["frames"][32:48].max() == 0  # zarr: silently zeros
    with pytest.raises(StoreError, match=r"video 'a', array 'frames': shard file .*a/frames/c/2/0/0/0 .*is missing"):
        read_array(store, "a", "frames")  # reads through stores are not fooled
    assert read_array(store, "a", "frames", 0, 32).shape == (32, 8, 8, 3)  # the shards before it are fine
    problems = verify_store(store)
    assert len(problems) == 1 and "a/frames: 4 shard files on disk, expected 5" in problems[0]


def test_verify_finds_a_corrupt_shard(tmp_path):
    store = make_store(tmp_path / "f.zarr")
    shard = store / "c" / "frames" / "c" / "1" / "0" / "0" / "0"
    shard.write_bytes(b"garbage" * 100)
    problems = verify_store(store)
    assert any("c/frames[16:32]: unreadable" in p for p in problems), problems


def test_verify_finds_inconsistent_attrs_and_shapes(tmp_path):
    store = make_store(tmp_path / "f.zarr")
    root = zarr.open_group(str(store), mode="r+")
    root["a"].attrs["n_frames"] = 71
    root["b"].attrs["split"] = "holdout"
    del root["c"].attrs["source_sha256"]
    del root["c"]["actions"]
    root["c"].create_array("actions", data=np.zeros(5, dtype=np.int64), chunks=(5,))
    problems = "\n".join(verify_store(store))
    assert "a: attrs n_frames 71 != frames length 70" in problems
    assert "b: split 'holdout' is not one of train, val, test" in problems
    assert "c: missing attrs source_sha256" in problems
    assert "c/actions: expected int64 (33,), got int64 (5,)" in problems


def test_inspect_cli_prints_videos_splits_and_files(tmp_path, capsys):
    store = make_store(tmp_path / "f.zarr")
    assert main(["inspect", str(store)]) == 0
    out = capsys.readouterr().out
    assert "a " in out and "train: 1 videos, 70 frames" in out and "total: 3 videos" in out
    summary = store_summary(store)
    a = summary["videos"][0]
    assert a["files"] == 5 + 4  # 5 shards + zarr.json of group/frames/actions + actions chunk
    assert summary["splits"]["test"] == {"videos": 1, "frames": 33}


def test_verify_cli_exits_non_zero_on_a_damaged_store(tmp_path):
    store = make_store(tmp_path / "f.zarr")
    cmd = [sys.executable, "-m", "pipeline.data.stores", "verify", str(store)]
    ok = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK")
    (store / "b" / "frames" / "c" / "0" / "0" / "0" / "0").unlink()
    bad = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "b/frames" in bad.stdout


def test_opening_something_that_is_not_a_store_names_it(tmp_path):
    with pytest.raises(StoreError, match="not a zarr store"):
        list_videos(tmp_path / "nothing.zarr")
    assert main(["verify", str(tmp_path / "nothing.zarr")]) == 2


def test_inspect_json_is_machine_readable(tmp_path, capsys):
    store = make_store(tmp_path / "f.zarr", actions=False)
    main(["inspect", "--json", str(store)])
    data = json.loads(capsys.readouterr().out)
    assert [v["actions"] for v in data["videos"]] == [False, False, False]


def damage(shard: Path, at: int = 8) -> None:
    """Overwrite 16 bytes of a real shard file, as a bad disk or a torn copy would (by default the
    header of its first compressed chunk)."""
    data = bytearray(shard.read_bytes())
    data[at : at + 16] = b"\xff" * 16
    shard.write_bytes(bytes(data))


def test_a_damaged_latents_shard_is_named_with_what_to_do(latents_store):
    shard = latents_store / "v1" / "latents" / "c" / "1" / "0" / "0" / "0"
    damage(shard)
    with pytest.raises(ValueError, match="checksum"):  # what zarr alone says: no store, no video, no file
        zarr.open_group(str(latents_store), mode="r")["v1"]["latents"][:]

    with pytest.raises(StoreError) as exc:
        LatentWindows(SplitIndex.open(latents_store, "train", "latents")).window(1, 32, 8)
    message = str(exc.value)
    assert f"{latents_store}: video 'v1', array 'latents': shard file {shard} (frames from 32) is damaged" in message
    assert f"python -m pipeline.data.stores verify {latents_store}" in message and "dvc repro -f tokenize" in message
    assert read_array(latents_store, "v1", "latents", 0, 32).shape == (32, 4, 8, 8)  # the sound shard still reads
    assert any(str(shard) in p for p in verify_store(latents_store))


def test_damage_inside_the_compressed_data_is_named_too(latents_store):
    # zstd alone decodes some damaged data without complaint: each chunk carries a CRC-32C
    shard = latents_store / "v1" / "latents" / "c" / "1" / "0" / "0" / "0"
    damage(shard, at=shard.stat().st_size // 3)
    with pytest.raises(StoreError, match=f"shard file {shard} .*is damaged .*checksum"):
        read_array(latents_store, "v1", "latents")


@pytest.mark.parametrize("name, reader", [("actions", read_actions), ("poses", read_poses)])
def test_damaged_side_arrays_are_named_too(tmp_path, name, reader):
    store = write_frames_store(tmp_path / "frames.zarr", poses_for=("v0",))
    shard = next(p for p in (store / "v0" / name / "c").rglob("*") if p.is_file())
    damage(shard)
    with pytest.raises(StoreError, match=rf"video 'v0', array '{name}': shard file {shard} .*damaged.*dvc repro -f extract"):
        reader(store, "v0")


def test_poses_read_back_and_are_verified(tmp_path):
    store = write_frames_store(tmp_path / "frames.zarr", poses_for=("v1",))
    assert [v.has_poses for v in list_videos(store)] == [False, True, False, False]
    poses = read_poses(store, "v1")
    assert poses.dtype == np.float32 and poses.shape == (24, 3)
    np.testing.assert_array_equal(read_poses(store, "v1", 4, 9), poses[4:9])
    assert read_poses(store, "v0") is None
    assert not [p for p in verify_store(store) if "/poses" in p or "pose_fields" in p]  # (it lacks extract's attrs)
    root = zarr.open_group(str(store), mode="r+")
    del root["v1"].attrs["pose_fields"]
    root["v2"].create_array("poses", data=np.zeros((5, 3), dtype=np.float32), chunks=(5, 3))
    problems = "\n".join(verify_store(store))
    assert "v1: poses without attrs pose_fields" in problems
    assert "v2/poses: expected float32 (24, 3), got float32 (5, 3)" in problems

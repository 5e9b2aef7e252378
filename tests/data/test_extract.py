import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

import pipeline.data.extract as extract_mod
from pipeline.config import ExtractParams
from pipeline.data.extract import ExtractError, extract_all
from pipeline.data.stores import list_videos, read_actions, read_array, read_poses, verify_store
from pipeline.data.video.ffmpeg import ffmpeg_exe
from tests.builders import default_raw_params
from tests.data.video.synth import decode_native, make_index_video, make_video

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pool_always(monkeypatch):
    """Use the process pool even for tiny test videos."""
    monkeypatch.setattr(extract_mod, "SERIAL_BELOW_PIXELS", 0)


def params(**kw) -> ExtractParams:
    base = dict(size=32, chunk_frames=8, shard_frames=32, workers=1, fps=20.0,
                splits={"train": 0.7, "val": 0.15, "test": 0.15})  # fixed here, whatever params.yaml says
    return ExtractParams(**(base | kw))


def write_manifest(raw: Path, entries: list[dict]) -> None:
    (raw / "manifest.json").write_text(json.dumps({"videos": entries}))


def ok_entry(vid, fps=30.0, **extra):
    return {"id": vid, "source": f"test:{vid}", "status": "ok", "fps": fps, **extra}


def run(raw, out, cfg=None, seed=0):
    return extract_all(raw, out / "frames.zarr", out / "frames_report.json", cfg or params(), seed)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", width=160, height=90, fps=30, seconds=2.0)


def test_every_video_becomes_a_group_with_the_contract_attrs(tmp_path, clip, pool_always):
    raw = tmp_path / "raw"
    raw.mkdir()
    for vid in ("a", "b", "c", "d"):
        (raw / f"{vid}.mp4").write_bytes(clip.read_bytes())
    np.save(raw / "a.actions.npy", np.arange(60, dtype=np.int64) % 18)
    write_manifest(raw, [ok_entry("a", actions_file="a.actions.npy", n_actions=18), ok_entry("b"), ok_entry("c"), ok_entry("d")])

    report = run(raw, tmp_path, params(workers=2))  # through the process pool
    store = tmp_path / "frames.zarr"
    assert verify_store(store) == []
    videos = {v.id: v for v in list_videos(store)}
    assert sorted(videos) == ["a", "b", "c", "d"] and report["n_ok"] == 4
    assert {v.split for v in videos.values()} == {"train", "val", "test"}
    attrs = videos["a"].attrs
    assert attrs["fps"] == 20 and attrs["source"] == "test:a" and attrs["n_frames"] == 40
    assert attrs["source_size"] == [160, 90] and attrs["crop_box"] == [34, 0, 124, 90]
    assert attrs["n_actions"] == 18 and videos["a"].has_actions and not videos["b"].has_actions
    assert attrs["source_sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    frames = read_array(store, "a", "frames")
    assert frames.shape == (40, 32, 32, 3) and frames.dtype == np.uint8
    root = zarr.open_group(str(store), mode="r")
    assert root.attrs["size"] == 32 and root.attrs["seed"] == 0 and root.attrs["resize_mode"] == "center_crop"
    assert root.attrs["splits"] == {"train": 0.7, "val": 0.15, "test": 0.15}  # the params used
    assert sorted(sum(root.attrs["split_videos"].values(), [])) == ["a", "b", "c", "d"]
    saved = json.loads((tmp_path / "frames_report.json").read_text())
    assert [v["status"] for v in saved["videos"]] == ["ok"] * 4 and saved["n_frames"] == 160


def test_actions_are_resampled_to_the_output_rate_and_aligned_to_frames(tmp_path):
    raw = tmp_path / "raw"
    make_index_video(raw / "idx.mp4", n_frames=30, fps=30)
    actions = np.arange(30, dtype=np.int64) * 10 + 3  # action j recorded with source frame j
    np.save(raw / "idx.actions.npy", actions)
    write_manifest(raw, [ok_entry("idx", fps=30, actions_file="idx.actions.npy")])
    run(raw, tmp_path, params(skip_start_s=0.25))

    store = tmp_path / "frames.zarr"
    frames, stored = read_array(store, "idx", "frames"), read_actions(store, "idx")
    native = decode_native(raw / "idx.mp4").reshape(30, -1).mean(1)
    shown = np.array([np.argmin(np.abs(native - f.mean())) for f in frames])  # which source frame is on screen
    assert len(stored) == len(frames) == 15
    np.testing.assert_array_equal(stored, actions[shown])


def test_actions_recorded_at_a_higher_rate_keep_every_third(tmp_path):
    acts = np.arange(90)
    out = extract_mod.resample_to_frames(acts, 60, 20, start=2, n=5)
    assert list(out) == [6, 9, 12, 15, 18]
    with pytest.raises(extract_mod.BadVideoError, match="cover"):
        extract_mod.resample_to_frames(acts[:10], 60, 20, start=0, n=10)


def test_each_bad_input_is_reported_by_name_with_its_reason_and_skipped(tmp_path, clip):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "good.mp4").write_bytes(clip.read_bytes())
    (raw / "empty.mp4").write_bytes(b"")
    (raw / "text.mp4").write_text("this is not a video\n" * 50)
    (raw / "cut.mp4").write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    fast = make_video(tmp_path / "fast.mp4", width=160, height=90, seconds=4.0, faststart=True)
    (raw / "cutfast.mp4").write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])  # index intact, frames gone
    make_video(raw / "short.mp4", width=64, height=48, seconds=0.5)
    (raw / "badact.mp4").write_bytes(clip.read_bytes())
    np.save(raw / "badact.actions.npy", np.zeros((3, 3), dtype=np.int64))
    write_manifest(raw, [
        ok_entry("good"), ok_entry("empty"), ok_entry("text"), ok_entry("cut"), ok_entry("cutfast"),
        ok_entry("short"), ok_entry("badact", actions_file="badact.actions.npy"), ok_entry("gone"),
        {"id": "failed", "source": "x", "status": "failed", "error": "HTTP Error 403"},
    ])
    report = run(raw, tmp_path, params(skip_start_s=0.3, skip_end_s=0.3))

    reasons = {v["id"]: v.get("reason") for v in report["videos"]}
    assert reasons.pop("good") is None
    expected = {
        "empty": "empty file (0 bytes)",
        "text": "not a video file",
        "cut": "truncated",
        "cutfast": "truncated or corrupt: decoded",
        "short": "shorter than the skip window",
        "badact": "expected a non-empty 1-D integer array",
        "gone": "no ",
        "failed": "HTTP Error 403",
    }
    assert set(reasons) == set(expected)
    for vid, reason in expected.items():
        assert reason in reasons[vid], (vid, reasons[vid])
    for vid in ("empty", "text", "cut", "cutfast", "short", "badact"):
        assert f"{vid}." in reasons[vid]  # the file is named
    assert [v.id for v in list_videos(tmp_path / "frames.zarr")] == ["good"]
    assert sorted(p.name for p in (tmp_path / "frames.zarr").iterdir()) == ["good", "zarr.json"]


def test_no_usable_video_fails_with_a_summary_and_still_writes_the_report(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "empty.mp4").write_bytes(b"")
    with pytest.raises(ExtractError, match="no usable video(.|\n)*empty: .*empty file"):
        run(raw, tmp_path)
    assert not (tmp_path / "frames.zarr").exists()
    assert json.loads((tmp_path / "frames_report.json").read_text())["n_ok"] == 0


def test_a_video_is_a_handful_of_files(tmp_path):
    raw = tmp_path / "raw"
    make_video(raw / "v.mp4", width=64, height=48, fps=20, seconds=5.0)
    np.save(raw / "v.actions.npy", np.zeros(100, dtype=np.int64))
    run(raw, tmp_path, params(chunk_frames=8, shard_frames=32))
    group = tmp_path / "frames.zarr" / "v"
    shards = [p for p in (group / "frames" / "c").rglob("*") if p.is_file()]
    assert len(shards) == 4  # 100 frames / 32 per shard, rounded up
    files = [p for p in group.rglob("*") if p.is_file()]
    assert len(files) == 4 + 3 + 1  # shards, zarr.json of group/frames/actions, one actions chunk


def test_same_params_give_identical_frames_serial_or_parallel(tmp_path, clip, pool_always):
    raw = tmp_path / "raw"
    raw.mkdir()
    for vid in ("a", "b", "c"):
        (raw / f"{vid}.mp4").write_bytes(clip.read_bytes())
    run(raw, tmp_path / "one", params(workers=1))
    run(raw, tmp_path / "two", params(workers=2))
    for vid in ("a", "b", "c"):
        np.testing.assert_array_equal(read_array(tmp_path / "one/frames.zarr", vid, "frames"),
                                      read_array(tmp_path / "two/frames.zarr", vid, "frames"))
    splits = [[v.split for v in list_videos(tmp_path / f"{run_name}/frames.zarr")] for run_name in ("one", "two")]
    assert splits[0] == splits[1]


def test_an_interrupted_run_leaves_the_previous_store_and_no_temporary(tmp_path, clip, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    for vid in ("a", "b"):
        (raw / f"{vid}.mp4").write_bytes(clip.read_bytes())
    run(raw, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "frames.zarr").rglob("*"))

    real = extract_mod.extract_video
    calls = []

    def interrupted(*args, **kw):  # Ctrl-C while the second video is being written
        calls.append(1)
        if len(calls) == 2:
            real(*args, **kw)
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(extract_mod, "extract_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(raw, tmp_path, params(size=16))
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "frames.zarr").rglob("*")) == before
    assert read_array(tmp_path / "frames.zarr", "a", "frames").shape[1] == 32  # the old store, untouched
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def _stage_dir(tmp_path, clip) -> Path:
    work = tmp_path / "work"
    (work / "data" / "raw").mkdir(parents=True)
    for vid in ("a", "b", "c"):
        (work / "data" / "raw" / f"{vid}.mp4").write_bytes(clip.read_bytes())
    p = default_raw_params()  # params.yaml + settings.yaml, written here as one params.yaml
    p["extract"].update(size=16, workers=1)
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    return work


def _slow_ffmpeg(tmp_path) -> Path:
    """The real ffmpeg, started up to 20 s late when decoding: a window in which to kill the stage.
    It waits only while its parent lives, so a killed stage leaves no sleeper behind for long."""
    wrapper = tmp_path / "slow-ffmpeg"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in *rawvideo*) i=0; while kill -0 $PPID 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done;; esac\n'
        f'exec "{ffmpeg_exe()}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


def _start_stage(work, ffmpeg=None):
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if ffmpeg:
        env["FFMPEG_BINARY"] = str(ffmpeg)
    # SIGINT at its default in the stage, so that Python turns it into KeyboardInterrupt even when
    # pytest itself was started in the background (`cmd &` starts with SIGINT ignored, and an
    # ignored signal stays ignored across exec)
    return subprocess.Popen([sys.executable, "-m", "stages.extract"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_group(work, proc, timeout=60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if any(p.is_dir() for t in (work / "data").glob("frames.zarr.tmp-*") for p in t.iterdir()):
                return
        except FileNotFoundError:  # the temporary store was renamed or removed between glob and listing
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the stage never started writing")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_killed_stage_leaves_no_store_that_looks_complete(tmp_path, clip, sig):
    work = _stage_dir(tmp_path, clip)
    proc = _start_stage(work, _slow_ffmpeg(tmp_path))
    _wait_for_group(work, proc)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert not (work / "data" / "frames.zarr").exists()
    leftovers = list((work / "data").glob("frames.zarr.tmp-*"))
    assert leftovers == [] if sig == signal.SIGINT else len(leftovers) == 1  # SIGKILL cannot clean up

    proc = _start_stage(work)  # the next run removes the leftover and completes
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert list((work / "data").glob("frames.zarr.tmp-*")) == []
    assert verify_store(work / "data" / "frames.zarr") == []
    assert "3 videos" in out


def test_an_audio_track_longer_than_the_video_is_not_taken_for_truncation(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=30:d=2", "-f", "lavfi",
                    "-i", "sine=d=2.3", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    str(raw / "av.mp4")], check=True)
    report = run(raw, tmp_path)
    assert report["videos"][0]["status"] == "ok" and report["n_frames"] == 40


def test_ctrl_c_stops_the_process_pool_at_once(tmp_path, clip, pool_always, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    for vid in ("a", "b"):
        (raw / f"{vid}.mp4").write_bytes(clip.read_bytes())
    monkeypatch.setenv("FFMPEG_BINARY", str(_slow_ffmpeg(tmp_path)))  # workers would decode 20 s late
    real_wait = extract_mod.wait

    def interrupted_wait(*args, **kw):
        result = real_wait(*args, **kw)
        if any(tmp_path.glob("frames.zarr.tmp-*/a.tmp-*")) and any(tmp_path.glob("frames.zarr.tmp-*/b.tmp-*")):
            raise KeyboardInterrupt  # as Ctrl-C would, once both workers are decoding
        return result

    monkeypatch.setattr(extract_mod, "wait", interrupted_wait)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run(raw, tmp_path, params(workers=2))
    assert time.monotonic() - t0 < 15  # without terminating them, shutdown would wait ~20 s for the workers
    assert not (tmp_path / "frames.zarr").exists() and list(tmp_path.glob("frames.zarr.tmp-*")) == []


@pytest.mark.parametrize("text", ["{not json", '{"videos": [{"status": "ok"}]}', '{"entries": []}'])
def test_a_manifest_that_is_not_one_is_named_and_nothing_is_written(tmp_path, text):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "manifest.json").write_text(text)
    with pytest.raises(ExtractError, match=r"raw/manifest\.json: not a manifest"):
        run(raw, tmp_path)
    assert not (tmp_path / "frames.zarr").exists()


def test_poses_are_resampled_like_actions_and_stored_beside_them(tmp_path):
    raw = tmp_path / "raw"
    make_index_video(raw / "idx.mp4", n_frames=30, fps=30)
    shutil.copy(raw / "idx.mp4", raw / "plain.mp4")
    actions = np.arange(30, dtype=np.int64) * 10 + 3
    poses = np.stack([np.arange(30), -np.arange(30), 22.5 * np.arange(30)], axis=1).astype(np.float32)  # row j: frame j
    np.save(raw / "idx.actions.npy", actions)
    np.save(raw / "idx.pose.npy", poses)
    write_manifest(raw, [ok_entry("idx", fps=30, actions_file="idx.actions.npy", pose_file="idx.pose.npy"), ok_entry("plain")])
    run(raw, tmp_path, params(skip_start_s=0.25))

    store = tmp_path / "frames.zarr"
    frames, stored = read_array(store, "idx", "frames"), read_poses(store, "idx")
    native = decode_native(raw / "idx.mp4").reshape(30, -1).mean(1)
    shown = np.array([np.argmin(np.abs(native - f.mean())) for f in frames])  # which source frame is on screen
    assert stored.dtype == np.float32 and stored.shape == (len(frames), 3) == (15, 3)
    np.testing.assert_array_equal(stored, poses[shown])
    np.testing.assert_array_equal(read_actions(store, "idx"), actions[shown])  # the same frames, by the same rule
    videos = {v.id: v for v in list_videos(store)}
    assert videos["idx"].has_poses and not videos["plain"].has_poses and read_poses(store, "plain") is None
    assert videos["idx"].attrs["pose_fields"] == ["x", "y", "heading_deg"] and videos["idx"].attrs["poses_fps"] == 30
    group = zarr.open_group(str(store), mode="r")["idx"]
    assert group["poses"].chunks == (15, 3) and group["actions"].chunks == (15,)  # one chunk each, same rule
    assert verify_store(store) == []


def test_a_pose_file_that_is_not_one_is_reported_and_the_video_skipped(tmp_path, clip):
    raw = tmp_path / "raw"
    raw.mkdir()
    for vid in ("good", "badpose"):
        (raw / f"{vid}.mp4").write_bytes(clip.read_bytes())
    np.save(raw / "badpose.pose.npy", np.zeros((60, 2), dtype=np.float32))
    write_manifest(raw, [ok_entry("good"), ok_entry("badpose", pose_file="badpose.pose.npy")])
    report = run(raw, tmp_path)
    reasons = {v["id"]: v.get("reason") for v in report["videos"]}
    assert "badpose.pose.npy: expected a non-empty (T, 3) finite float array" in reasons["badpose"]


def test_a_source_slower_than_extract_fps_warns_and_fps_null_keeps_its_own_rate(tmp_path):
    raw = tmp_path / "raw"
    make_index_video(raw / "slow.mp4", n_frames=14, fps=17.5)
    np.save(raw / "slow.pose.npy", np.arange(42, dtype=np.float32).reshape(14, 3))
    write_manifest(raw, [ok_entry("slow", fps=17.5, pose_file="slow.pose.npy")])

    report = run(raw, tmp_path / "at20", params(fps=20))
    (entry,) = report["videos"]
    assert "recorded at 17.5 fps, below extract.fps 20: 12% of its stored frames repeat" in entry["warning"]
    assert len(read_poses(tmp_path / "at20" / "frames.zarr", "slow")) == 16  # 14 frames, two of them twice

    report = run(raw, tmp_path / "own", params(fps=None))
    (entry,) = report["videos"]
    store = tmp_path / "own" / "frames.zarr"
    assert "warning" not in entry and report["fps"] is None and list_videos(store)[0].fps == 17.5
    frames = read_array(store, "slow", "frames")
    assert len(frames) == 14 and len(np.unique(frames.mean(axis=(1, 2, 3)).round())) == 14  # every frame once
    np.testing.assert_array_equal(read_poses(store, "slow"), np.load(raw / "slow.pose.npy"))


def test_a_video_is_written_under_a_temporary_name_and_appears_only_when_complete(tmp_path, clip, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.mp4").write_bytes(clip.read_bytes())
    seen = []
    real_writer = extract_mod.ShardedArrayWriter

    def watching_writer(group, *args, **kw):
        seen.append(sorted(p.name for p in Path(group.store.root).iterdir() if p.is_dir()))
        return real_writer(group, *args, **kw)

    monkeypatch.setattr(extract_mod, "ShardedArrayWriter", watching_writer)
    run(raw, tmp_path, params(workers=1))
    assert len(seen[0]) == 1 and seen[0][0].startswith("a.tmp-")  # while it is written
    assert sorted(p.name for p in (tmp_path / "frames.zarr").iterdir() if p.is_dir()) == ["a"]

import re

import pytest

from pipeline.data.video.probe import ProbeError, probe_video
from tests.data.video.synth import make_vfr_video, make_video


def test_probe_reads_size_rate_and_duration_of_a_generated_video(tmp_path):
    info = probe_video(make_video(tmp_path / "v.mp4", width=320, height=180, fps=25, seconds=2.0))
    assert (info.width, info.height, info.fps, info.codec) == (320, 180, 25.0, "h264")
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.bytes == (tmp_path / "v.mp4").stat().st_size


def test_probe_gives_the_duration_of_a_variable_rate_video(tmp_path):
    info = probe_video(make_vfr_video(tmp_path / "vfr.mp4"))
    # 20 frames at 1/30 s then 10 at 1/10 s: the last starts at 1.567 s.
    assert 1.56 <= info.duration <= 1.67


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file (0 bytes)"), (b"hello, not a video\n" * 10, "not a video file")],
)
def test_probe_names_the_file_and_the_reason_for_unusable_files(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(ProbeError, match=re.escape(reason)) as err:
        probe_video(path)
    assert str(path) in str(err.value)


def test_probe_reports_a_truncated_mp4_whose_index_is_lost(tmp_path):
    good = make_video(tmp_path / "v.mp4", seconds=2.0)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # moov atom is at the end: lost
    with pytest.raises(ProbeError, match="truncated"):
        probe_video(cut)


def test_probe_of_a_missing_file_says_not_found(tmp_path):
    with pytest.raises(ProbeError, match="not found"):
        probe_video(tmp_path / "nope.mp4")

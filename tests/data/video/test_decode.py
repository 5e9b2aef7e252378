import numpy as np
import pytest

from pipeline.data.video.decode import (
    DecodeError,
    EmptyWindowError,
    FrameStream,
    build_graph,
    frame_window,
    geometry,
    raw_args,
    source_frame_index,
)
from pipeline.data.video.probe import probe_video
from tests.data.video.synth import (
    decode_native,
    make_index_video,
    make_vfr_video,
    make_video,
    vfr_pts,
)


def extract(path, size=64, mode="center_crop", fps=20, masks=(), **window):
    info = probe_video(path)
    win = frame_window(info, fps, **window)
    graph, geo = build_graph(info, size, mode, fps, win, masks)
    stream = FrameStream(raw_args(graph), size, chunk_frames=8)
    frames = np.concatenate(list(stream))
    return frames, geo, win


def block_mean(img, fy, fx):
    h, w, c = img.shape
    return img.reshape(h // fy, fy, w // fx, fx, c).astype(np.float64).mean(axis=(1, 3))


def psnr(a, b):
    """On luma: chroma is subsampled in the source, so colour edges differ with the order of scale and
    conversion; the geometry (what lands where) shows in luma."""
    luma = np.array([0.299, 0.587, 0.114])
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) @ luma - np.asarray(b, np.float64) @ luma) ** 2))


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """256x128 (2:1): every mode maps to whole-pixel block averages, so the reference is exact."""
    return make_video(tmp_path_factory.mktemp("v") / "wide.mp4", width=256, height=128, fps=20, seconds=1.0)


def test_center_crop_keeps_the_middle_square_and_matches_an_independent_decode(wide):
    frames, geo, _ = extract(wide, mode="center_crop")
    assert geo.crop_box == (64, 0, 192, 128)
    ref = decode_native(wide)
    expected = block_mean(ref[0][:, 64:192], 2, 2)
    assert psnr(frames[0], expected) > 35
    shifted = block_mean(ref[0][:, 48:176], 2, 2)  # a crop 16 px off-centre is clearly worse
    assert psnr(frames[0], shifted) < psnr(frames[0], expected) - 5


def test_squash_scales_the_whole_frame_to_the_square(wide):
    frames, geo, _ = extract(wide, mode="squash")
    assert geo.crop_box == (0, 0, 256, 128)
    ref = decode_native(wide)
    assert psnr(frames[0], block_mean(ref[0], 2, 4)) > 35


def test_letterbox_fits_the_frame_and_pads_black_bars(wide):
    frames, geo, _ = extract(wide, mode="letterbox")
    assert geo.scaled == (64, 32) and geo.offset == (0, 16)
    assert frames[:, :16].max() == 0 and frames[:, 48:].max() == 0
    ref = decode_native(wide)
    assert psnr(frames[0, 16:48], block_mean(ref[0], 4, 4)) > 35


def test_center_crop_of_a_portrait_video_crops_vertically():
    geo = geometry(90, 161, 32, "center_crop")
    x0, y0, x1, y1 = geo.crop_box
    assert (x1 - x0) == (y1 - y0) == 90 and x0 == 0 and y0 % 2 == 0 and y0 in (34, 35, 36)


def test_hud_mask_paints_its_source_rectangle_black_before_scaling(wide):
    # Source x 64..128, y 0..64 -> inside the centre crop (x 64..192) -> output x 0..32, y 0..32.
    masked, _, _ = extract(wide, mode="center_crop", masks=[(0.25, 0.0, 0.5, 0.5)])
    plain, _, _ = extract(wide, mode="center_crop")
    assert masked[:, :31, :31].max() <= 2
    assert plain[:, :31, :31].max() > 50
    np.testing.assert_array_equal(masked[:, 34:, 34:], plain[:, 34:, 34:])


@pytest.mark.parametrize("src_fps, seconds, out_fps", [(30, 3.0, 20), (25, 2.0, 20), (60, 1.0, 20), (10, 2.0, 20)])
def test_constant_rate_video_gives_exactly_duration_times_fps_frames(tmp_path, src_fps, seconds, out_fps):
    path = make_video(tmp_path / "v.mp4", width=64, height=48, fps=src_fps, seconds=seconds)
    frames, _, win = extract(path, size=32, fps=out_fps)
    assert len(frames) == round(seconds * out_fps) == win.expected


def test_output_frame_k_shows_the_source_frame_on_screen_at_k_over_fps(tmp_path):
    path = make_index_video(tmp_path / "idx.mp4", n_frames=30, fps=30)
    native = decode_native(path).reshape(30, -1).mean(1)
    frames, _, _ = extract(path, size=16, fps=20)
    shown = [int(np.argmin(np.abs(native - f.mean()))) for f in frames]
    assert shown == list(source_frame_index(np.arange(20), 30, 20))
    assert shown[:4] == [0, 1, 3, 4]


def test_variable_rate_video_is_resampled_on_timestamps(tmp_path):
    path = make_vfr_video(tmp_path / "vfr.mp4")
    info = probe_video(path)
    frames, _, win = extract(path, size=16, fps=20)
    assert len(frames) == round(info.duration * 20) == win.expected
    # Frame k shows the last source frame whose timestamp is <= k / 20.
    pts = np.array([vfr_pts(j) for j in range(30)])
    native = decode_native(path).reshape(30, -1).mean(1)
    shown = [int(np.argmin(np.abs(native - f.mean()))) for f in frames]
    expected = [int(np.searchsorted(pts, k / 20 + 1e-9, side="right") - 1) for k in range(len(frames))]
    assert shown == expected
    assert shown[12:16] == [18, 19, 20, 20]  # 30 fps part sampled, then each 10 fps frame held twice


def test_skip_and_max_frames_cut_the_output_grid(tmp_path):
    path = make_index_video(tmp_path / "idx.mp4", n_frames=30, fps=30)
    native = decode_native(path).reshape(30, -1).mean(1)
    frames, _, win = extract(path, size=16, fps=20, skip_start_s=0.25, skip_end_s=0.25)
    assert (win.start, len(frames)) == (5, 10)
    assert int(np.argmin(np.abs(native - frames[0].mean()))) == 7  # on screen at t = 0.25 s
    capped, _, _ = extract(path, size=16, fps=20, skip_start_s=0.25, max_frames=7)
    assert len(capped) == 7
    np.testing.assert_array_equal(capped, frames[:7])


def test_a_skip_window_longer_than_the_video_is_refused(tmp_path):
    info = probe_video(make_video(tmp_path / "v.mp4", width=64, height=48, seconds=1.0))
    with pytest.raises(EmptyWindowError, match="shorter than the skip window"):
        frame_window(info, 20, skip_start_s=0.6, skip_end_s=0.5)


def test_frame_stream_raises_with_ffmpegs_message_when_decoding_fails(tmp_path):
    path = make_video(tmp_path / "v.mp4", width=64, height=48, seconds=0.5)
    info = probe_video(path)
    graph, _ = build_graph(info, 16, "squash", 20, frame_window(info, 20))
    args = raw_args(graph)
    args[args.index("-filter_complex") + 1] = args[args.index("-filter_complex") + 1].replace("flags=area", "flags=nonsense")
    with pytest.raises(DecodeError, match=str(path)):
        list(FrameStream(args, 16))


def test_leaving_a_frame_stream_early_stops_ffmpeg(tmp_path):
    path = make_video(tmp_path / "v.mp4", width=64, height=48, seconds=3.0)
    info = probe_video(path)
    graph, _ = build_graph(info, 16, "squash", 20, frame_window(info, 20))
    stream = FrameStream(raw_args(graph), 16, chunk_frames=4, prefetch=1)
    it = iter(stream)
    assert next(it).shape == (4, 16, 16, 3)
    it.close()
    assert stream._proc.poll() is not None


def test_source_frame_index_is_sample_and_hold():
    assert list(source_frame_index(np.arange(6), 30, 20)) == [0, 1, 3, 4, 6, 7]
    assert list(source_frame_index(np.arange(4), 60, 20)) == [0, 3, 6, 9]
    assert list(source_frame_index(np.arange(5), 10, 20)) == [0, 0, 1, 1, 2]

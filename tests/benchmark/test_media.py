"""The benchmark's GIF grids."""



from pipeline.benchmark.media import write_media
from tests.benchmark.toy import bench_params, run


def test_media_grid_has_a_column_per_policy(stores, scorer, tmp_path):
    import imageio.v3 as iio

    bench = bench_params()
    result = run(stores, scorer, bench)
    paths = write_media(result, tmp_path, bench.workloads, mode="recompute")
    assert sorted(p.name for p in paths) == ["long_full.gif", "long_tight.gif", "short_full.gif", "short_tight.gif"]
    frames = iio.imread(tmp_path / "short_tight.gif")
    # 4 predicted frames; 4 columns (truth, persistence, 2 policies) of 128 px tiles + gaps, 1 clip row
    assert frames.shape[0] == 4 and frames.shape[2] == 4 * (128 + 2)

"""The benchmark's params are checked against the code and the held-out data before anything
slow runs; each error names the params key."""

from types import SimpleNamespace

import pytest

from pipeline.benchmark.clips import BenchmarkError
from pipeline.benchmark.validate import validate_benchmark
from tests.benchmark.toy import bench_params


def params(**bench):
    return SimpleNamespace(seed=0, benchmark=bench_params(**bench))


def test_valid_params_pass(stores):
    validate_benchmark(params(), frames=stores[0])


def test_an_unknown_builtin_policy_names_its_key_and_the_known_ones(stores):
    with pytest.raises(BenchmarkError, match=r"^benchmark\.policies\[2\]: policy 'packcash': not a baseline or built-in "
                                             r"policy \(recent_window, packcache, causalcache_vdm, flowcache, full_history, "
                                             r"fifo, sink_recent, h2o, tova, rkv, random, pose_retrieval, pose_coverage\)"):
        validate_benchmark(params(policies=["recent_window", "full_history", "packcash"]), frames=stores[0])


def test_a_missing_policy_file_names_its_key_and_the_file(stores, tmp_path):
    spec = f"{tmp_path}/mine.py:Mine"
    with pytest.raises(BenchmarkError, match=rf"^benchmark\.policies\[0\]: policy '{spec}': file {tmp_path}/mine\.py not found"):
        validate_benchmark(params(policies=[spec]), frames=stores[0])


def test_two_policies_under_one_name_are_rejected(stores):
    with pytest.raises(BenchmarkError, match=r"^benchmark\.policies: two policies report under one name"):
        validate_benchmark(params(policies=["packcache", "pipeline.rollout.policies:PackCache"]), frames=stores[0])


def test_a_workload_no_test_video_can_hold_names_its_key(stores):
    # b_test has 40 frames, c_test 12; the train video (60) does not count
    workloads = {"short": {"context": 3, "predict": 4}, "long": {"context": 30, "predict": 20}}
    with pytest.raises(BenchmarkError, match=r"^benchmark\.workloads\.long: .*no test video has the 50 frames a "
                                             r"30 -> 20 workload needs \(b_test: 40, c_test: 12\)"):
        validate_benchmark(params(workloads=workloads), frames=stores[0])


def test_only_the_named_policies_and_workloads_are_checked(stores):
    """try_policy checks its --policy specs and its --workload, not the params' others."""
    bad = params(policies=["nope"], workloads={"short": {"context": 3, "predict": 4}, "long": {"context": 50, "predict": 50}})
    validate_benchmark(bad, policies=["packcache"], workloads=["short"], frames=stores[0])
    with pytest.raises(BenchmarkError, match=r"^--policy\[0\]: policy 'nope'"):
        validate_benchmark(bad, policies=["nope"], workloads=["short"], policy_key="--policy", frames=stores[0])

import pytest

from tests.builders import write_frames_store, write_latents_store
from tests.project_clone import TINY, ProjectClone, make_project_clone


@pytest.fixture
def latents_store(tmp_path):
    return write_latents_store(tmp_path / "latents.zarr")


@pytest.fixture
def frames_store(tmp_path):
    return write_frames_store(tmp_path / "frames.zarr")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The whole pipeline through `dvc repro` on TINY, in a throwaway clone: (clone, its output)."""
    clone = make_project_clone(tmp_path_factory.mktemp("e2e") / "project")
    clone.set_params(TINY)
    out = clone.run("dvc", "repro", timeout=900).stdout
    return clone, out


@pytest.fixture
def project_clone(tmp_path) -> ProjectClone:
    return make_project_clone(tmp_path / "project")


def pytest_sessionfinish(session, exitstatus):
    """No test may skip: a skipped test (missing data, a missing tool) is a failure of the suite,
    so that every clone runs every check."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and exitstatus == 0:
        reporter.write_line(f"{len(skipped)} test(s) skipped: the suite allows none (see -rs)", red=True)
        session.exitstatus = 1

import pytest

from tests.builders import write_frames_store, write_latents_store
from tests.project_clone import ProjectClone, make_project_clone


@pytest.fixture
def latents_store(tmp_path):
    return write_latents_store(tmp_path / "latents.zarr")


@pytest.fixture
def frames_store(tmp_path):
    return write_frames_store(tmp_path / "frames.zarr")


@pytest.fixture
def project_clone(tmp_path) -> ProjectClone:
    return make_project_clone(tmp_path / "project")

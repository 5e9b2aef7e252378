import pytest

from pipeline.benchmark.run import Scorer
from tests.benchmark.toy import make_stores


@pytest.fixture(scope="package")
def stores(tmp_path_factory):
    return make_stores(tmp_path_factory.mktemp("stores"))


@pytest.fixture(scope="package")
def scorer():
    return Scorer()

import pytest

from tests.conftest import start_local_ray


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray per test module, shut down after the module."""
    with start_local_ray(num_cpus=2) as ray:
        yield ray

import os

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray per test module (about 5 s to start on 2 cores), shut down after the module."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():  # a module before us left one running
        ray.shutdown()
    ray.init(num_cpus=2, log_to_driver=False, configure_logging=True, logging_level="WARNING")
    yield ray
    ray.shutdown()

"""One `quadriga serve` with real HAProxy engines for the whole e2e session; each test makes its own load
balancers and deletes them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dataplane import Cloud, running_cloud
from tests.support.ha import active_standby_flavor


@pytest.fixture(scope="session")
def cloud() -> Iterator[Cloud]:
    with running_cloud() as cloud:
        yield cloud


@pytest.fixture
def lbs(cloud: Cloud) -> Iterator[list[str]]:
    """Append the ids of the load balancers a test creates: they are deleted (cascade) afterwards."""
    created: list[str] = []
    yield created
    for lb_id in created:
        cloud.delete_lb(lb_id)


@pytest.fixture(scope="session")
def ha_flavor(cloud: Cloud) -> Iterator[str]:
    """The ACTIVE_STANDBY flavor (one per session: its name is taken until the session's cloud stops)."""
    with active_standby_flavor(cloud) as flavor_id:
        yield flavor_id

"""A real Keystone per test module (tests/support/keystone.py), populated with the test projects and users."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.keystone import Keystone


@pytest.fixture(scope="module")
def keystone() -> Iterator[Keystone]:
    with Keystone() as ks:
        ks.populate()
        yield ks

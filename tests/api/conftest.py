"""Fixtures of the in-process API suites (the harness lives in tests/support/api_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api_harness import Api, make_api


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    yield from make_api(tmp_path)


@pytest.fixture
def rbac_api(tmp_path) -> Iterator[Api]:
    yield from make_api(tmp_path, auth="header", quotas={"loadbalancer": 2})

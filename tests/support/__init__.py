"""Helpers shared by quadriga's test suites and benchmarks (not tests themselves)."""

from .server import (
    POSTGRES_URL_ENV,
    DatabaseNotConfigured,
    QuadrigaServer,
    ServerStartupError,
    postgres_url_from_env,
)

__all__ = [
    "POSTGRES_URL_ENV",
    "DatabaseNotConfigured",
    "QuadrigaServer",
    "ServerStartupError",
    "postgres_url_from_env",
]

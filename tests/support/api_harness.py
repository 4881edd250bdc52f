"""The in-process API harness: the real app, a real database and the real reconciler thread.

The database is SQLite in a temp dir, or PostgreSQL when QUADRIGA_TEST_DATABASE_URL names a server
(`.ci/run` runs this suite once each way). Each test gets a fresh schema."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from quadriga.api.app import create_app
from quadriga.api.auth import make_authenticator
from quadriga.api.common import Services
from quadriga.api.rolemap import DEFAULT as DEFAULT_ROLE_MAPPING
from quadriga.api.rolemap import RoleMapping
from quadriga.certs.tls import TLSMaterial
from quadriga.controller.reconciler import Reconciler
from quadriga.db.migrate import upgrade
from quadriga.db.session import Database
from quadriga.network import embedded
from quadriga.providers.base import ProviderDriver
from quadriga.providers.noop import NoopProvider

PROJECT = "project-a"
OTHER = "project-b"


def _database(tmp_path) -> Database:
    url = os.environ.get("QUADRIGA_TEST_DATABASE_URL")
    if not url:
        return Database(f"sqlite:///{tmp_path / 'test.sqlite'}")
    # One schema per test on a shared PostgreSQL server.
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = Database(url)
    with admin.engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    sep = "&" if "?" in url else "?"
    db = Database(f"{url}{sep}options=-csearch_path%3D{schema}")
    db.test_schema = schema  # type: ignore[attr-defined]
    return db


def _drop(db: Database) -> None:
    schema = getattr(db, "test_schema", None)
    db.dispose()
    if schema:
        admin = Database(os.environ["QUADRIGA_TEST_DATABASE_URL"])
        with admin.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class Api:
    """A TestClient with Octavia-shaped helpers."""

    def __init__(self, client: TestClient, db: Database, reconciler: Reconciler) -> None:
        self.client = client
        self.db = db
        self.reconciler = reconciler
        self.headers: dict[str, str] = {"X-Project-Id": PROJECT}

    def req(self, method: str, path: str, body: Any = None, headers: dict | None = None, **kw) -> Any:
        h = dict(self.headers, **(headers or {}))
        return self.client.request(method, path, json=body, headers=h, **kw)

    def get(self, path: str, **kw) -> Any:
        return self.req("GET", path, **kw)

    def post(self, path: str, body: Any, **kw) -> Any:
        return self.req("POST", path, body, **kw)

    def put(self, path: str, body: Any, **kw) -> Any:
        return self.req("PUT", path, body, **kw)

    def delete(self, path: str, **kw) -> Any:
        return self.req("DELETE", path, **kw)

    def ok(self, response: Any, status: int) -> dict:
        assert response.status_code == status, (response.status_code, response.text)
        return response.json() if response.content else {}

    def wait_lb(self, lb_id: str, status: str = "ACTIVE", timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/v2/lbaas/loadbalancers/{lb_id}")
            if status == "DELETED" and r.status_code == 404:
                return {}
            body = r.json().get("loadbalancer", {})
            if body.get("provisioning_status") == status:
                return body
            assert time.monotonic() < deadline, f"LB {lb_id} stuck: {r.status_code} {r.text}"
            time.sleep(0.02)

    def subnet_id(self, name: str = "private-subnet") -> str:
        from sqlalchemy import select

        from quadriga.db import models as m

        with self.db.read() as s:
            return s.scalars(select(m.Subnet.id).where(m.Subnet.name == name)).one()

    def create_lb(self, wait: bool = True, **fields) -> dict:
        body = {"vip_subnet_id": self.subnet_id(), **fields}
        lb = self.ok(self.post("/v2/lbaas/loadbalancers", {"loadbalancer": body}), 201)["loadbalancer"]
        return self.wait_lb(lb["id"]) if wait else lb

    def create(self, path: str, root: str, lb_id: str, **fields) -> dict:
        obj = self.ok(self.post(path, {root: fields}), 201)[root]
        self.wait_lb(lb_id)
        return obj


class CheckingNoop(NoopProvider):
    """The noop provider with the API checks of a provider that has a data plane (VIP networks must exist,
    certificate refs are loaded), so they are tested without engines."""

    data_plane = True


def make_api(
    tmp_path,
    auth: str = "noauth",
    quotas: dict | None = None,
    extra_providers: Callable[[Database], dict[str, ProviderDriver]] | None = None,
    tls: TLSMaterial | None = None,
    role_mapping: RoleMapping = DEFAULT_ROLE_MAPPING,
    data_plane: bool = False,
) -> Iterator[Api]:
    """An Api over a fresh database; `tls` checks certificate refs (None: refs are stored unchecked);
    `data_plane`: the `noop` provider checks VIP networks and certificate refs as one with a data plane."""
    db = _database(tmp_path)
    upgrade(db.engine)
    with db.write() as s:
        embedded.seed_defaults(s, PROJECT)
    providers = {"noop": CheckingNoop() if data_plane else NoopProvider()}
    providers |= extra_providers(db) if extra_providers else {}
    reconciler = Reconciler(db, providers, poll_interval=0.2)
    defaults = {"loadbalancer": -1, "listener": -1, "pool": -1, "healthmonitor": -1, "member": -1}
    defaults |= {"l7policy": -1, "l7rule": -1} | (quotas or {})
    svc = Services(
        db=db,
        authenticator=make_authenticator(auth, "demo"),
        providers=providers,
        default_provider="noop",
        wake=reconciler.wake,
        quota_defaults=defaults,
        enforce_quotas=auth != "noauth",
        tls=tls,
        role_mapping=role_mapping,
    )
    reconciler.start()
    try:
        with TestClient(create_app(svc), raise_server_exceptions=False) as client:
            yield Api(client, db, reconciler)
    finally:
        reconciler.stop()
        _drop(db)

"""A real Keystone for tests (scripts/keystone.sh: PyPI `keystone` in its own virtualenv, SQLite, fernet).

    with Keystone() as ks:                       # installs on first use, bootstraps, serves on a free port
        ks.populate(load_balancer=server.lb_url)  # projects, users, roles, catalog (scripts/keystone_ctl.py)
        token = ks.token("member-a", project="project-a")

`pause()`/`resume()` freeze and thaw the server (SIGSTOP/SIGCONT to its process group: a Keystone that
accepts connections and never answers); `stop()`/`start()` end and restart it on the same port with the
same database and keys, so tokens issued before stay valid."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from quadriga.config import KeystoneSettings
from tests.support.server import free_port, scrubbed_env

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "keystone.sh"
PASSWORD = "quadriga-test"  # every user's (scripts/keystone_ctl.py --password)
SERVICE_USER = "quadriga"
INSTALL_TIMEOUT = 900.0
START_TIMEOUT = 120.0


class Keystone:
    def __init__(self, token_expiration: int = 3600) -> None:
        self.port = free_port()
        self.token_expiration = token_expiration
        self.dir = Path(tempfile.mkdtemp(prefix="quadriga-keystone-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._http = httpx.Client(timeout=30, trust_env=False)

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    @property
    def projects(self) -> dict[str, str]:
        """Project name -> id (after populate)."""
        return self.info["projects"]

    def _script(self, *args: str, timeout: float) -> str:
        proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=scrubbed_env())
        if proc.returncode != 0:
            raise RuntimeError(f"keystone.sh {args[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def start(self) -> Keystone:
        """Install (once), set up (once per directory) and serve; returns when Keystone answers."""
        if self.process is not None and self.process.poll() is None:
            return self
        self._script("install", timeout=INSTALL_TIMEOUT)
        port, expiration = str(self.port), str(self.token_expiration)
        self._script("setup", str(self.dir), "--port", port, "--token-expiration", expiration, timeout=START_TIMEOUT)
        log = (self.dir / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(SCRIPT), "serve", str(self.dir), "--port", port],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=scrubbed_env(),
            start_new_session=True,  # its own process group: pause() stops the master and its worker
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"Keystone exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self._http.get(self.auth_url, timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"Keystone did not answer within {START_TIMEOUT:.0f}s:\n{self.log_tail()}")
            time.sleep(0.2)

    def populate(self, **endpoints: str) -> dict[str, Any]:
        """Projects, users and roles, and catalog entries for endpoints given as load_balancer=, network=,
        key_manager= (URLs); returns (and keeps) the ids."""
        flags = [a for kind, url in endpoints.items() for a in (f"--{kind.replace('_', '-')}", url)]
        out = self._script("populate", str(self.dir), "--port", str(self.port), *flags, timeout=START_TIMEOUT)
        self.info = json.loads(out)
        return self.info

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("server.log", "keystone.log"):
            with contextlib.suppress(OSError):
                text += f"--- {name} ---\n" + "\n".join((self.dir / name).read_text().splitlines()[-lines:]) + "\n"
        return text

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def pause(self) -> None:
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        self._signal_group(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(timeout=5)
        self.process = None

    def close(self) -> None:
        self.stop()
        self._http.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Keystone:
        try:
            return self.start()
        except BaseException:
            self.close()  # a failed start leaves no process and no directory behind
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tokens ------------------------------------------------------------------------------------
    def _issue(self, identity: dict[str, Any], scope: dict[str, Any] | None) -> str:
        auth: dict[str, Any] = {"identity": identity}
        if scope is not None:
            auth["scope"] = scope
        resp = self._http.post(self.auth_url + "/auth/tokens?nocatalog", json={"auth": auth})
        assert resp.status_code == 201, f"Keystone refused a login: {resp.status_code} {resp.text}"
        return resp.headers["X-Subject-Token"]

    def token(self, user: str, project: str | None = None, domain: str | None = None, system: bool = False) -> str:
        """A token of `user`: scoped to a project or a domain (by name), to the system, or unscoped."""
        identity = {
            "methods": ["password"],
            "password": {"user": {"name": user, "domain": {"id": "default"}, "password": PASSWORD}},
        }
        scope: dict[str, Any] | None = None
        if project:
            scope = {"project": {"name": project, "domain": {"id": "default"}}}
        elif domain:
            scope = {"domain": {"name": domain}}
        elif system:
            scope = {"system": {"all": True}}
        return self._issue(identity, scope)

    def short_lived_token(self, user: str, project: str, seconds: float) -> tuple[str, float]:
        """A project token that expires in about `seconds` (Keystone caps a token at the expiry of the
        application credential it was made with); returns it and the wall-clock time it expires at."""
        user_token = self.token(user, project=project)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        resp = self._http.post(
            f"{self.auth_url}/users/{self.info['users'][user]}/application_credentials",
            headers={"X-Auth-Token": user_token},
            json={
                "application_credential": {
                    "name": f"short-{uuid.uuid4().hex[:8]}",
                    "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                }
            },
        )
        assert resp.status_code == 201, resp.text
        cred = resp.json()["application_credential"]
        identity = {
            "methods": ["application_credential"],
            "application_credential": {"id": cred["id"], "secret": cred["secret"]},
        }
        return self._issue(identity, None), expires.timestamp()

    def revoke(self, token: str) -> None:
        admin = self.token("admin", project="admin")
        resp = self._http.delete(
            self.auth_url + "/auth/tokens", headers={"X-Auth-Token": admin, "X-Subject-Token": token}
        )
        assert resp.status_code == 204, resp.text

    # -- clients -----------------------------------------------------------------------------------
    def cloud_config(self, user: str, project: str) -> dict[str, Any]:
        """A clouds.yaml entry with an ordinary password login and no endpoint overrides: the clients find
        every service through Keystone's catalog."""
        return {
            "auth_type": "password",
            "auth": {
                "auth_url": self.auth_url,
                "username": user,
                "password": PASSWORD,
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": "RegionOne",
            "identity_api_version": 3,
        }

    def service_settings(self, **overrides: Any) -> KeystoneSettings:
        """quadriga's [keystone] settings for this Keystone (its service user), with `overrides`."""
        fields = {"auth_url": self.auth_url, "username": SERVICE_USER, "password": PASSWORD, "project_name": "service"}
        return KeystoneSettings(**{**fields, **overrides})

    def quadriga_config(self, cache_seconds: float = 60, timeout: float = 3.0) -> str:
        """The [api]/[keystone] part of a quadriga config file that validates tokens here."""
        return (
            '[api]\nauth_strategy = "keystone"\n'
            "[keystone]\n"
            f'auth_url = "{self.auth_url}"\n'
            f'username = "{SERVICE_USER}"\n'
            f'password = "{PASSWORD}"\n'
            'project_name = "service"\n'
            f"cache_seconds = {cache_seconds}\n"
            f"timeout = {timeout}\n"
        )

"""Agent certificate rotation: renew an agent's certificate when it is within `renew_before` of expiring.

The agent makes the new key and the controller signs its request (see `quadriga.agent.certificate` for the
protocol and why); the controller then opens a fresh TLS handshake and counts the rotation done only once
the agent presents the new certificate. Meanwhile the agent's engines are marked `cert_busy`; their
`cert_expiration` follows what the agent presents. An agent that cannot be reached is logged once (and
once more when it is back) and retried at the next pass: nothing is written until the new certificate is
confirmed, and the old one stays valid until it expires."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, MutableMapping
from typing import Protocol

from cryptography import x509
from sqlalchemy import update

from quadriga.agent.api import AgentInfo
from quadriga.agent.client import AgentError
from quadriga.certs.pki import PKIError
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.providers.engine import AMP_DELETED

log = logging.getLogger("quadriga.certificates")

Signer = Callable[[bytes, str], bytes]  # (signing request PEM, agent name) -> certificate PEM


class RenewableAgent(Protocol):
    """What rotation needs of an agent (`quadriga.agent.client.AgentClient`)."""

    def presented_certificate(self) -> x509.Certificate: ...
    def request_certificate(self) -> bytes: ...
    def install_certificate(self, cert_pem: bytes) -> AgentInfo: ...


class RotationFailed(Exception):
    pass


class CertificateRotation:
    def __init__(
        self,
        db: Database,
        agents: Mapping[str, RenewableAgent],
        sign: Signer,
        *,
        renew_before: dt.timedelta,
        expirations: MutableMapping[str, dt.datetime] | None = None,
    ) -> None:
        self.db = db
        self.agents = agents
        self.sign = sign
        self.renew_before = renew_before
        self.expirations = {} if expirations is None else expirations  # agent -> what it presents expires
        self._failing: set[str] = set()
        self._recorded: dict[str, dt.datetime] = {}  # what the amphorae rows already say, per agent

    def run_once(self) -> int:
        """Check every agent, renew those close to expiry. Returns how many were renewed."""
        return sum(self.check(name) for name in list(self.agents))

    def check(self, name: str) -> bool:
        """Renew agent `name`'s certificate if it is due; True when it was renewed."""
        agent = self.agents[name]
        try:
            presented = agent.presented_certificate()
        except AgentError as exc:
            self._failed(name, "cannot be checked", exc)
            return False
        self._record(name, presented.not_valid_after_utc)
        left = presented.not_valid_after_utc - dt.datetime.now(dt.UTC)
        if left > self.renew_before:
            self._recovered(name)
            return False
        log.info("agent=%s certificate serial %x expires in %s: renewing", name, presented.serial_number, left)
        self._set_busy(name, True)
        try:
            renewed = self._renew(name, agent)
        except (AgentError, PKIError, RotationFailed) as exc:
            self._failed(name, "certificate not renewed, the current one stays", exc)
            return False
        finally:
            self._set_busy(name, False)
        self._record(name, renewed.not_valid_after_utc)
        self._recovered(name)
        log.info(
            "agent=%s certificate renewed: serial %x -> %x, valid until %s",
            name,
            presented.serial_number,
            renewed.serial_number,
            renewed.not_valid_after_utc.isoformat(),
        )
        return True

    def _renew(self, name: str, agent: RenewableAgent) -> x509.Certificate:
        cert_pem = self.sign(agent.request_certificate(), name)
        new = x509.load_pem_x509_certificate(cert_pem)
        agent.install_certificate(cert_pem)
        presented = agent.presented_certificate()
        if presented.serial_number != new.serial_number:
            raise RotationFailed(
                f"the agent still presents serial {presented.serial_number:x}, not {new.serial_number:x}"
            )
        return presented

    def _record(self, name: str, expires: dt.datetime) -> None:
        self.expirations[name] = expires
        if self._recorded.get(name) == expires:
            return
        self._recorded[name] = expires
        with self.db.write() as session:
            session.execute(
                update(m.Amphora)
                .where(m.Amphora.agent == name, m.Amphora.status != AMP_DELETED)
                .values(cert_expiration=expires.replace(tzinfo=None))
            )

    def _set_busy(self, name: str, busy: bool) -> None:
        with self.db.write() as session:
            session.execute(
                update(m.Amphora).where(m.Amphora.agent == name, m.Amphora.status != AMP_DELETED).values(cert_busy=busy)
            )

    def _failed(self, name: str, what: str, exc: Exception) -> None:
        if name in self._failing:
            log.debug("agent=%s %s: %s", name, what, exc)
            return
        self._failing.add(name)
        log.warning("agent=%s %s (retried at every housekeeping pass; logged once): %s", name, what, exc)

    def _recovered(self, name: str) -> None:
        if name in self._failing:
            self._failing.discard(name)
            log.info("agent=%s reachable again for certificate checks", name)

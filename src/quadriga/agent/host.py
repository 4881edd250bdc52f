"""An agent host's parts together: the network driver, the engines (`Agent`) and the mutual-TLS API.

`quadriga agent` runs one on its own; `quadriga serve` runs one in its process and reaches it over the same
mTLS API as a remote one, so the embedded and the scaled-out shapes share every code path. Starting adopts
engines a previous process left running (their HAProxy survives a crash of the agent) and collects the
orphans no engine owns (namespaces, veths, HAProxy processes of deleted engine directories); stopping removes
every engine and everything the network driver created."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

from quadriga.agent.agent import Agent
from quadriga.agent.api import AgentServer, Identity, create_app
from quadriga.agent.certificate import AgentCertificate
from quadriga.certs.pki import Bundle
from quadriga.engine.regex import haproxy_binary
from quadriga.network.drivers import make_driver
from quadriga.network.drivers.base import NetworkDriver
from quadriga.network.drivers.netns import instance_for

log = logging.getLogger("quadriga.agent")


@dataclass
class AgentHost:
    name: str
    state_dir: Path
    bundle: Bundle
    host: str = "127.0.0.1"
    port: int = 9443
    network_driver: str = "auto"
    spare_engines: int = 0

    def start(self) -> AgentHost:
        self.driver: NetworkDriver = make_driver(self.network_driver, instance_for(self.state_dir))
        self.agent = Agent(self.state_dir, self.driver, spares=self.spare_engines)
        self.agent.recover()
        self.agent.collect_orphans()  # what a crash left that no engine on disk owns
        self.agent.start_spares()
        certificate = AgentCertificate(self.bundle)
        identity = Identity(
            name=self.name,
            network_driver=self.driver.name,
            haproxy_version=_haproxy_version(),
            certificate=certificate,
        )
        app = create_app(self.agent, identity)
        self.server = AgentServer(app, self.bundle, self.host, self.port, certificate=certificate)
        try:
            self.server.start()
        except Exception:
            self.agent.shutdown()
            raise
        log.info("agent %s serves engines with the %s network driver at %s", self.name, self.driver.name, self.url)
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        """Stop the API, then every engine, then remove the network plumbing."""
        self.server.stop()
        self.agent.shutdown()
        log.info("agent %s stopped; its engines and network objects are removed", self.name)


def _haproxy_version() -> str | None:
    binary = haproxy_binary()
    if binary is None:
        return None
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stdout
    return out.split()[2] if out.startswith("HAProxy version") else None

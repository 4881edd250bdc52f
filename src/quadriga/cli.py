"""The `quadriga` command."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import sys
import threading
from pathlib import Path

from quadriga import config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quadriga", description="Load balancing as a service (Octavia v2 API).")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the APIs and the controller in one process (the embedded shape)")
    serve.add_argument("--config", type=Path, help="TOML config file")
    serve.add_argument("--state-dir", type=Path, help="where the database and generated files live")
    serve.add_argument("--host", help="address both APIs listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="load-balancer API port (default 9876)")
    serve.add_argument("--network-port", type=int, help="networking API port (default 9696)")
    serve.add_argument(
        "--database-url", help="e.g. postgresql://user:pw@127.0.0.1/quadriga (default: SQLite in the state dir)"
    )
    serve.add_argument(
        "--auth-strategy", choices=config.AUTH_STRATEGIES, help="default noauth; keystone needs [keystone] in --config"
    )
    serve.add_argument("--default-project", help="project for noauth requests that name none (default demo)")
    serve.add_argument("--provider", help="default provider: amphora (HAProxy engines, the default) or noop")
    serve.add_argument("--provider-delay", type=float, help="seconds the noop provider takes per change (default 0)")
    _data_plane_arguments(serve)
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    demo = sub.add_parser("demo", help="start everything and show a load balancer carrying traffic (until Ctrl-C)")
    demo.add_argument("--port", type=int, help="load-balancer API port (default 9876)")
    demo.add_argument("--network-port", type=int, help="networking API port (default 9696)")
    _data_plane_arguments(demo)
    demo.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING, ERROR")
    _health_parser(sub)
    _agent_parser(sub)
    _pki_parser(sub)
    return parser


def _data_plane_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--network-driver",
        choices=config.NETWORK_DRIVERS,
        help="netns (root: a namespace per engine) or loopback (VIPs in 127/8); default auto: netns where it can",
    )
    parser.add_argument("--agent-port", type=int, help="port of the in-process agent's mutual-TLS API (default 9443)")
    parser.add_argument(
        "--keymanager-port", type=int, help="port of the secret store's key-manager API (default 9311; 0: any free one)"
    )
    parser.add_argument("--spare-engines", type=int, help="started, idle engines new ones adopt (default 0)")
    parser.add_argument(
        "--private-cidr", help="subnet of the `private` network created at the first start (default 10.10.0.0/24)"
    )
    _health_listen(parser)


def _health_listen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--health-listen", help="UDP IP:port of the health receiver (default 127.0.0.1:5555; port 0: any free one)"
    )


def _health_parser(sub: argparse._SubParsersAction) -> None:
    health = sub.add_parser(
        "health", help="run a health receiver alone: heartbeats -> operating statuses and statistics in the database"
    )
    health.add_argument("--config", type=Path, help="TOML config file ([health] and [database] are read)")
    health.add_argument("--state-dir", type=Path, help="where the default heartbeat key lives")
    health.add_argument("--database-url", help="the controller's database (default: SQLite in the state dir)")
    _health_listen(health)
    health.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")


def _agent_parser(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser(
        "agent", help="run an agent: this host's engines, behind a mutual-TLS API for the controller"
    )
    agent.add_argument("--state-dir", type=Path, default=None, help="where the engines' files live")
    agent.add_argument("--listen", default="127.0.0.1:9443", type=_host_port, help="host:port (default %(default)s)")
    agent.add_argument("--network-driver", choices=config.NETWORK_DRIVERS, default="auto", help="default auto")
    agent.add_argument("--name", default=socket.gethostname(), help="the agent's name (default: the host name)")
    agent.add_argument(
        "--pki-dir",
        type=Path,
        help="bundle directory (agent.pem, agent.key, ca.pem) from `quadriga pki issue-agent`; "
        "default: issue one from the CA in the state directory",
    )
    agent.add_argument(
        "--health-receiver",
        action="append",
        default=[],
        type=_host_port,
        help="IP:port of a health receiver to send heartbeats to (repeat for several); without one, the "
        "controller sees this agent's engines as silent and fails them over",
    )
    agent.add_argument(
        "--heartbeat-key", type=Path, help="file holding the heartbeat key (a copy of the controller's heartbeat.key)"
    )
    agent.add_argument("--spare-engines", type=int, default=0, help="started, idle engines new ones adopt")
    agent.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")


def _pki_parser(sub: argparse._SubParsersAction) -> None:
    pki = sub.add_parser("pki", help="the control channel's certificates")
    pki_sub = pki.add_subparsers(dest="pki_command", required=True)
    issue = pki_sub.add_parser("issue-agent", help="issue an agent's certificate (for an agent on another host)")
    issue.add_argument("--state-dir", type=Path, default=None, help="the controller's state directory (holds the CA)")
    issue.add_argument("--name", required=True, help="the agent's name")
    issue.add_argument(
        "--address", action="append", default=[], help="an IP address or DNS name the controller reaches it at"
    )
    issue.add_argument("--out", type=Path, required=True, help="directory for agent.pem, agent.key and ca.pem")
    issue.add_argument("--days", type=float, default=365, help="validity (default %(default)s)")
    issue.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING, ERROR")


def _host_port(value: str) -> tuple[str, int]:
    try:
        return config.host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # per-plugin chatter at every start


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _logging(args.log_level)
    if args.command == "serve":
        from quadriga.server import serve

        overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config", "log_level")}
        try:
            settings = config.load(args.config, overrides)
        except config.ConfigError as exc:
            print(f"quadriga: {exc}", file=sys.stderr)
            return 2
        serve(settings)
    elif args.command == "demo":
        from quadriga import demo

        overrides = {k: v for k, v in vars(args).items() if k not in ("command", "log_level")}
        return demo.run(config.load(None, overrides))
    elif args.command == "health":
        return _run_health(args)
    elif args.command == "agent":
        return _run_agent(args)
    elif args.command == "pki":
        return _issue_agent(args)
    return 0


def _run_health(args: argparse.Namespace) -> int:
    """A receiver and recorder alone, until SIGTERM/SIGINT (several may run, each on its own address)."""
    from quadriga.db.session import Database
    from quadriga.health.service import HealthService

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config", "log_level")}
    try:
        settings = config.load(args.config, overrides)
        db = Database(settings.db_url)
        service = HealthService(db, settings).start()
    except (config.ConfigError, ValueError, OSError) as exc:
        print(f"quadriga health: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"listening on {service.receiver.address[0]}:{service.receiver.address[1]}", flush=True)
    try:
        stop.wait()
    finally:
        service.stop()
        db.dispose()
    return 0


def _run_agent(args: argparse.Namespace) -> int:
    """The standalone agent: adopt the engines this host already runs, serve the API until SIGTERM/SIGINT,
    then remove the engines and their network plumbing."""
    from quadriga.certs import pki

    state_dir = (args.state_dir or config.default_state_dir()).expanduser()
    host, port = args.listen
    try:
        pki.check_name(args.name)
        if args.pki_dir:
            bundle = pki.Bundle.in_directory(args.pki_dir, "agent")
            if not bundle.exists():
                raise ValueError(f"{args.pki_dir} lacks agent.pem, agent.key or ca.pem: see `quadriga pki issue-agent`")
        else:
            bundle = pki.ensure_local_agent_bundle(state_dir, args.name, [host])
        keys = _agent_heartbeat_key(args)
    except (ValueError, OSError, pki.PKIError) as exc:
        print(f"quadriga agent: {exc}", file=sys.stderr)
        return 2
    from quadriga.agent.host import AgentHost  # the engines' machinery: only once the arguments are good
    from quadriga.network.drivers.base import NetworkError

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        agent_host = AgentHost(
            args.name, state_dir, bundle, host, port, args.network_driver, spare_engines=args.spare_engines
        ).start()
    except (NetworkError, OSError) as exc:  # no netns here, the port is taken, the certificate is unreadable
        print(f"quadriga agent: cannot start: {exc}", file=sys.stderr)
        return 1
    sender = None
    if keys:
        from quadriga.agent.heartbeat import HeartbeatSender

        key_id, key = next(iter(keys.items()))
        sender = HeartbeatSender(agent_host.agent, args.health_receiver, key_id, key)
        sender.start()
        logging.getLogger("quadriga.agent").info(
            "heartbeats to %s (key %s)", ", ".join(f"{h}:{p}" for h, p in args.health_receiver), key_id
        )
    try:
        while not stop.wait(1.0):
            if not agent_host.server.running:
                logging.getLogger("quadriga.agent").error("the agent API stopped unexpectedly")
                return 1
    finally:
        if sender is not None:
            sender.stop()
        agent_host.stop()
    return 0


def _agent_heartbeat_key(args: argparse.Namespace) -> dict[str, bytes]:
    """The agent's signing key ({} without receivers: no heartbeats, said loudly)."""
    from quadriga.health.keys import load_keys

    if not args.health_receiver:
        logging.getLogger("quadriga.agent").warning(
            "no --health-receiver: this agent sends no heartbeats, so a controller fails its engines over"
        )
        return {}
    for host, _ in args.health_receiver:
        ipaddress.ip_address(host)  # heartbeats go to addresses, not names
    if args.heartbeat_key is None:
        raise ValueError("--health-receiver needs --heartbeat-key (a copy of the controller's heartbeat.key)")
    return load_keys([args.heartbeat_key])


def _issue_agent(args: argparse.Namespace) -> int:
    """Issue an agent's bundle from the CA in the state directory, for an agent on another host."""
    from quadriga.certs import pki

    state_dir = (args.state_dir or config.default_state_dir()).expanduser()
    try:
        ca = pki.CertificateAuthority.load_or_create(pki.pki_dir(state_dir))
        cert_pem, key_pem = pki.issue_agent(ca, args.name, args.address, days=args.days)
        bundle = pki.Bundle.in_directory(args.out, "agent")
        pki.write_bundle(bundle, cert_pem, key_pem, ca.cert_pem)
    except (ValueError, OSError, pki.PKIError) as exc:
        print(f"quadriga pki: {exc}", file=sys.stderr)
        return 2
    print(f"{bundle.cert}\n{bundle.key}\n{bundle.ca}\nvalid until {pki.not_after(cert_pem).isoformat()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

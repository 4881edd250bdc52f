"""The agent's pure parts: which changes the runtime API can make, what a reload carries over, how `show stat`
becomes a report, and how the runtime API client reads HAProxy's answers (from a canned unix socket)."""

from __future__ import annotations

import socketserver
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from quadriga.agent.engine import carried_state, runtime_steps, stats_by_object
from quadriga.agent.runtime import RuntimeApi, RuntimeApiError
from quadriga.engine import spec as s
from quadriga.engine.render import EMPTY_SERVER_STATE
from tests.agent.helpers import listener, make_spec

VIP = "127.0.0.9"
EXTRA = Path("/nonexistent/files")  # runtime_steps only names TLS files; these specs have none


def m(name: str, port: int = 9000, **kw) -> s.MemberSpec:
    return s.MemberSpec(id=name, address="127.0.0.1", protocol_port=port, **kw)


def names(steps) -> list[tuple[str, str]]:
    return [(step.func.__name__, step.keywords["server"]) for step in steps]


# --- runtime_steps -------------------------------------------------------------------------------------------------


def test_member_changes_become_runtime_steps_adds_first_deletes_last() -> None:
    before = make_spec(VIP, [m("a"), m("b"), m("c")])
    after = make_spec(VIP, [m("a", weight=5), m("b", admin_state_up=False), m("d")], revision=2)

    steps = runtime_steps(before, after, EXTRA)

    assert names(steps) == [
        ("add_server", "d"),
        ("set_state", "d"),
        ("set_weight", "a"),
        ("set_state", "b"),
        ("set_state", "c"),
        ("del_server", "c"),
    ]
    assert [st.keywords.get("state") for st in steps if st.func.__name__ == "set_state"] == ["ready", "maint", "maint"]
    assert steps[0].keywords == {
        "backend": "pool:http",
        "server": "d",
        "address": "127.0.0.1:9000",
        "params": ["weight 1"],
    }


def test_a_checked_pool_enables_the_checks_of_an_added_member() -> None:
    hm = s.HealthMonitorSpec(type="TCP", delay=1, timeout=1, max_retries=1)
    steps = runtime_steps(make_spec(VIP, [], monitor=hm), make_spec(VIP, [m("a")], revision=2, monitor=hm), EXTRA)
    assert names(steps) == [("add_server", "a"), ("enable_health", "a"), ("set_state", "a")]


def test_every_backend_of_a_pool_gets_the_change() -> None:
    listeners = [listener(), listener("alt", 8081)]
    steps = runtime_steps(
        make_spec(VIP, [m("a")], listeners=listeners), make_spec(VIP, [m("a", weight=3)], listeners=listeners), EXTRA
    )
    assert [st.keywords["backend"] for st in steps] == ["pool:http", "pool:alt"]


@pytest.mark.parametrize(
    "after",
    [
        make_spec(VIP, [m("a", port=9001)]),  # a member's address or port
        make_spec(VIP, [m("a", backup=True)]),  # HAProxy cannot flip backup at runtime
        make_spec(VIP, [m("a", monitor_port=9100)]),
        make_spec(VIP, [m("a")], listeners=[listener(connection_limit=10)]),  # anything beyond members
        make_spec(VIP, [m("a")], monitor=s.HealthMonitorSpec(type="TCP", delay=1, timeout=1, max_retries=1)),
    ],
)
def test_other_changes_need_a_reload(after: s.EngineSpec) -> None:
    assert runtime_steps(make_spec(VIP, [m("a")]), after, EXTRA) is None


def test_the_same_spec_needs_no_step() -> None:
    assert runtime_steps(make_spec(VIP, [m("a")]), make_spec(VIP, [m("a")], revision=9), EXTRA) == []


# --- carried_state -------------------------------------------------------------------------------------------------

HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
    "srv_check_addr srv_agent_addr srv_agent_port"
)


def state_row(name: str, op: int, admin: int, uweight: int, iweight: int = 1) -> str:
    return f"3 pool:http 1 {name} 127.0.0.1 {op} {admin} {uweight} {iweight} 5 6 3 1 6 0 0 0 - 9000 - 0 0 - - 0"


def test_a_reload_carries_the_health_of_unchanged_checked_members_only() -> None:
    hm = s.HealthMonitorSpec(type="TCP", delay=1, timeout=1, max_retries=1)
    served = make_spec(VIP, [m("a"), m("b"), m("c")], monitor=hm)
    spec = make_spec(VIP, [m("a", weight=3), m("b", port=9001)], revision=2, monitor=hm)
    state = "\n".join(["1", HEADER, state_row("a", 0, 1, 7), state_row("b", 0, 0, 1), state_row("c", 2, 0, 1)])

    carried = carried_state(state + "\n", served, spec).splitlines()

    # a: same address and checks, so its health (down) carries, but not its runtime maintenance and weight;
    # b moved to another port and c is gone.
    assert carried == ["1", HEADER, state_row("a", 0, 0, 1)]


def test_health_does_not_carry_over_a_change_of_the_pools_tls() -> None:
    hm = s.HealthMonitorSpec(type="HTTPS", delay=1, timeout=1, max_retries=1)
    served = make_spec(VIP, [m("a")], monitor=hm)
    state = "\n".join(["1", HEADER, state_row("a", 2, 0, 1)]) + "\n"
    assert carried_state(state, served, served.model_copy(update={"revision": 2})).splitlines()[2:] == [
        state_row("a", 2, 0, 1)
    ]
    tls = served.pools[0].model_copy(update={"tls": s.PoolTLSSpec()})
    assert carried_state(state, served, served.model_copy(update={"pools": (tls,)})).splitlines() == ["1", HEADER]


def test_without_checks_or_a_served_spec_nothing_carries() -> None:
    spec = make_spec(VIP, [m("a")])
    state = "\n".join(["1", HEADER, state_row("a", 0, 0, 1)]) + "\n"
    assert carried_state(state, spec, spec).splitlines() == ["1", HEADER]
    assert carried_state(state, None, spec) == EMPTY_SERVER_STATE


# --- stats_by_object -----------------------------------------------------------------------------------------------


def row(proxy: str, server: str, status: str, **counters: str) -> dict[str, str]:
    return {"pxname": proxy, "svname": server, "status": status, **counters}


def test_stats_become_listeners_and_members_with_the_worse_status_of_two_backends() -> None:
    rows = [
        row("http", "FRONTEND", "OPEN", bin="10", bout="20", scur="1", stot="5", ereq="2"),
        row("pool:http", "a", "UP"),
        row("pool:http", "b", "UP 1/2"),
        row("pool:http", "BACKEND", "UP"),
        row("alt", "FRONTEND", "STOP", bin="", bout=""),
        row("pool:alt", "a", "DOWN 1/3"),
        row("pool:alt", "b", "MAINT"),
        row("empty:alt", "BACKEND", "DOWN"),
    ]

    listeners, members = stats_by_object(rows)

    assert listeners["http"].model_dump() == {
        "status": "OPEN",
        "bytes_in": 10,
        "bytes_out": 20,
        "active_connections": 1,
        "total_connections": 5,
        "request_errors": 2,
    }
    assert listeners["alt"].status == "STOP" and listeners["alt"].bytes_in == 0
    assert members == {"pool": {"a": "DOWN 1/3", "b": "MAINT"}, "empty": {}}


# --- RuntimeApi ----------------------------------------------------------------------------------------------------


@pytest.fixture
def canned() -> Iterator[tuple[RuntimeApi, dict[str, str], list[str]]]:
    """A unix socket that answers each command from `answers` (unknown ones with HAProxy's complaint)."""
    answers: dict[str, str] = {}
    received: list[str] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            command = self.rfile.readline().decode().strip()
            received.append(command)
            self.wfile.write(answers.get(command, "Unknown command.\n").encode())

    with tempfile.TemporaryDirectory(prefix="qa-") as directory:
        path = Path(directory) / "api.sock"
        server = socketserver.UnixStreamServer(str(path), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield RuntimeApi(path, timeout=2), answers, received
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def test_show_proc_reads_the_masters_counters_and_current_workers(canned) -> None:
    api, answers, _ = canned
    answers["show proc"] = (
        "#<PID>          <type>          <reloads>       <uptime>        <version>\n"
        "100             master          4 [failed: 1]   0d00h10m02s     2.6.12\n"
        "# workers\n"
        "205             worker          0               0d00h00m02s     2.6.12\n"
        "# old workers\n"
        "180             worker          1               0d00h01m00s     2.6.12\n"
        "# programs\n\n"
    )
    procs = api.show_proc()
    assert (procs.master, procs.reloads, procs.failed_reloads, procs.workers) == (100, 4, 1, (205,))


def test_show_stat_and_show_info_parse(canned) -> None:
    api, answers, _ = canned
    answers["show stat"] = "# pxname,svname,status,\nhttp,FRONTEND,OPEN,\npool:http,a,UP 1/2,\n\n"
    answers["show info"] = "Name: HAProxy\nPid: 42\nUptime: 0d 0h00m01s\n"
    assert api.show_stat() == [
        {"pxname": "http", "svname": "FRONTEND", "status": "OPEN"},
        {"pxname": "pool:http", "svname": "a", "status": "UP 1/2"},
    ]
    assert api.show_info()["Pid"] == "42"


def test_commands_that_haproxy_refuses_raise_with_its_words(canned) -> None:
    api, answers, received = canned
    answers["set server pool:http/a weight 3"] = "\n"
    answers["del server pool:http/a"] = "Only servers in maintenance mode can be deleted.\n"
    api.set_weight("pool:http", "a", 3)
    with pytest.raises(RuntimeApiError, match="maintenance mode"):
        api.del_server("pool:http", "a")
    with pytest.raises(RuntimeApiError, match="Unknown command"):
        api.enable_health("pool:http", "a")
    assert received == ["set server pool:http/a weight 3", "del server pool:http/a", "enable health pool:http/a"]


def test_a_value_cannot_smuggle_a_second_command(canned) -> None:
    api, _, received = canned
    for server in ("a; shutdown sessions server x/y", "a\nshow info"):
        with pytest.raises(RuntimeApiError, match="refusing"):
            api.set_state("pool:http", server, "ready")
    assert received == []


def test_an_absent_socket_is_a_runtime_api_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeApiError, match="api.sock"):
        RuntimeApi(tmp_path / "api.sock").show_info()

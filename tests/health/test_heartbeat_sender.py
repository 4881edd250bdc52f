"""The sender, one pass at a time (`send_once`) to a plain UDP socket: counter deltas across restarts,
send errors, failing reports, oversized reports, key rotation."""

from __future__ import annotations

import errno
import logging
import random
import socket
import uuid

import pytest

from quadriga.agent.heartbeat import HeartbeatSender, counter_deltas
from quadriga.health.codec import Heartbeat, decode
from tests.health.helpers import KEY, KEY_ID, NEW_KEY, NEW_KEY_ID, FakeAgent, engine_report, listener_report


def receive(sock: socket.socket, count: int = 1) -> list[Heartbeat]:
    return [decode(sock.recv(65536), {KEY_ID: KEY, NEW_KEY_ID: NEW_KEY}) for _ in range(count)]


def sender_for(agent: FakeAgent, sock: socket.socket) -> HeartbeatSender:
    return HeartbeatSender(agent, [sock.getsockname()], KEY_ID, KEY, interval=0.05)


def with_traffic(bytes_in: int, total_connections: int, active: int = 0) -> dict[str, object]:
    listener = listener_report(bytes_in=bytes_in, total_connections=total_connections, active_connections=active)
    return {"listeners": {"listener-1": listener}}


def test_counter_deltas() -> None:
    assert counter_deltas((150, 10, 5, 0), (100, 10, 2, 0)) == (50, 0, 3, 0)
    assert counter_deltas((150, 10, 5, 0), (0, 0, 0, 0)) == (150, 10, 5, 0)  # a new listener: all of it
    # one counter went down: HAProxy restarted them all (a reload); everything now counted is new
    assert counter_deltas((150, 10, 5, 0), (100, 10, 9, 0)) == (150, 10, 5, 0)


def test_deltas_across_an_agent_restart_reloads_a_new_listener_and_a_stopped_engine(
    udp_capture: socket.socket,
) -> None:
    agent = FakeAgent(engine_report(**with_traffic(1000, 10)))  # HAProxy has run for a while
    sender = sender_for(agent, udp_capture)

    def step(**report: object) -> dict[str, tuple[int, int, int]]:
        agent.set(engine_report(**report))
        assert sender.send_once() == 1
        (hb,) = receive(udp_capture)
        return {
            lid: (beat.bytes_in, beat.total_connections, beat.active_connections)
            for lid, beat in hb.payload.listeners.items()
        }

    try:
        # first pass of this (re)started agent: only the baseline, the previous agent sent the rest
        assert step(**with_traffic(1000, 10, active=4)) == {"listener-1": (0, 0, 4)}
        assert step(**with_traffic(1500, 12)) == {"listener-1": (500, 2, 0)}
        assert step(**with_traffic(200, 1)) == {"listener-1": (200, 1, 0)}  # reload: counters restarted
        assert step(**with_traffic(250, 3)) == {"listener-1": (50, 2, 0)}
        both = {
            "listener-1": listener_report(bytes_in=300, total_connections=4),
            "listener-2": listener_report(bytes_in=30, total_connections=1),  # new since the last pass
        }
        assert step(listeners=both) == {"listener-1": (50, 1, 0), "listener-2": (30, 1, 0)}
        assert step(running=False, listeners={}) == {}  # HAProxy down: nothing to count, baselines kept
        back = {
            "listener-1": listener_report(bytes_in=40, total_connections=1),  # restarted: below the baseline
            "listener-2": listener_report(bytes_in=20, total_connections=1),  # one counter below is enough
        }
        assert step(listeners=back) == {"listener-1": (40, 1, 0), "listener-2": (20, 1, 0)}
    finally:
        sender.stop()


def test_a_delta_nobody_received_is_carried_into_the_next_heartbeat(udp_capture: socket.socket) -> None:
    agent = FakeAgent(engine_report(**with_traffic(100, 1)))
    sender = HeartbeatSender(agent, [("127.0.0.1", 0)], KEY_ID, KEY)  # port 0: every send fails
    try:
        sender.send_once()  # baseline
        agent.set(engine_report(**with_traffic(300, 3)))
        assert sender.send_once() == 0
        sender.receivers = [udp_capture.getsockname()]
        agent.set(engine_report(**with_traffic(350, 4)))
        assert sender.send_once() == 1
        (hb,) = receive(udp_capture)
        assert hb.payload.listeners["listener-1"].bytes_in == 250
    finally:
        sender.stop()


class FlakySocket(socket.socket):
    """A UDP socket whose sends fail while `broken` is set (a route that went away and came back)."""

    broken = True

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:  # type: ignore[override]
        if FlakySocket.broken:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        return super().sendto(data, address)


def test_send_errors_are_logged_once_per_address_and_recover(
    udp_capture: socket.socket, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "socket", FlakySocket)
    caplog.set_level(logging.INFO, logger="quadriga.health")
    sender = sender_for(FakeAgent(engine_report()), udp_capture)
    try:
        for _ in range(3):
            assert sender.send_once() == 0
        FlakySocket.broken = False
        assert sender.send_once() == 1
        assert receive(udp_capture)[0].seq == 4
        messages = [r.getMessage() for r in caplog.records]
        host, port = udp_capture.getsockname()
        address = f"{host}:{port}"
        assert [m for m in messages if address in m] == [
            f"heartbeats to {address} fail ([Errno 101] Network is unreachable); retrying every interval",
            f"heartbeats to {address} are sent again",
        ]
        assert sender.counters()["send_errors"] == 3
    finally:
        FlakySocket.broken = True
        sender.stop()


def test_failing_reports_do_not_stop_the_sender(udp_capture: socket.socket, caplog: pytest.LogCaptureFixture) -> None:
    agent = FakeAgent(engine_report())
    sender = sender_for(agent, udp_capture)
    agent.fail = RuntimeError("engine lock timeout")
    try:
        assert sender.send_once() == 0
        assert sender.send_once() == 0
        assert len([r for r in caplog.records if "cannot be read" in r.getMessage()]) == 1
        agent.fail = None
        assert sender.send_once() == 1
        assert sender.counters()["report_errors"] == 2
    finally:
        sender.stop()


def test_sequence_numbers_grow_across_engines_and_passes(udp_capture: socket.socket) -> None:
    agent = FakeAgent(engine_report("engine-a"), engine_report("engine-b"))
    sender = sender_for(agent, udp_capture)
    try:
        sender.send_once()
        sender.send_once()
        beats = receive(udp_capture, 4)
        assert [hb.seq for hb in beats] == [1, 2, 3, 4]
        assert {hb.boot for hb in beats} == {sender.boot}
    finally:
        sender.stop()


def test_too_many_members_are_left_out_but_the_engine_stays_alive(udp_capture: socket.socket) -> None:
    rng = random.Random(5)
    members = {"pool-1": {str(uuid.UUID(int=rng.getrandbits(128))): "UP" for _ in range(5000)}}
    agent = FakeAgent(engine_report(members=members))
    sender = sender_for(agent, udp_capture)
    try:
        assert sender.send_once() == 1
        (hb,) = receive(udp_capture)
        assert hb.payload.partial and hb.payload.members == {}
        assert hb.payload.listeners  # statuses and stats still go
        assert sender.counters()["too_large"] == 1
    finally:
        sender.stop()


def test_members_go_when_they_change_and_every_few_heartbeats(udp_capture: socket.socket) -> None:
    agent = FakeAgent(engine_report())
    sender = HeartbeatSender(agent, [udp_capture.getsockname()], KEY_ID, KEY, members_every=3)

    def members_sent() -> dict[str, dict[str, str]] | None:
        assert sender.send_once() == 1
        (hb,) = receive(udp_capture)
        assert hb.payload.partial == (not hb.payload.members)
        return hb.payload.members or None

    try:
        up, down = {"pool-1": {"member-1": "UP"}}, {"pool-1": {"member-1": "DOWN"}}
        assert [members_sent() for _ in range(5)] == [up, None, None, up, None]
        agent.set(engine_report(members=down))
        assert [members_sent() for _ in range(4)] == [down, None, None, down]
    finally:
        sender.stop()


def test_members_nobody_received_go_again(udp_capture: socket.socket) -> None:
    agent = FakeAgent(engine_report())
    sender = HeartbeatSender(agent, [("127.0.0.1", 0)], KEY_ID, KEY)  # port 0: every send fails
    try:
        assert sender.send_once() == 0
        sender.receivers = [udp_capture.getsockname()]
        assert sender.send_once() == 1
        assert receive(udp_capture)[0].payload.members == {"pool-1": {"member-1": "UP"}}
    finally:
        sender.stop()


@pytest.mark.parametrize(
    "oddity",
    [{"members": {"pool-1": {"member-1": "\x00weird"}}}, {"listeners": {"listener-1": listener_report("\x7f")}}],
)
def test_an_engine_whose_report_cannot_be_encoded_does_not_stop_the_others(
    udp_capture: socket.socket, oddity: dict[str, object]
) -> None:
    broken = engine_report("engine-a", **oddity)
    agent = FakeAgent(broken, engine_report("engine-b"))
    sender = sender_for(agent, udp_capture)
    try:
        assert sender.send_once() == 1
        assert [hb.engine_id for hb in receive(udp_capture)] == ["engine-b"]
        assert sender.counters()["skipped"] == 1
    finally:
        sender.stop()


@pytest.mark.parametrize(("error", "sent"), [("x" * 100_000, "x" * 2048), ("a\x00b\udcff [ALERT]\n", "a?b? [ALERT]\n")])
def test_error_text_is_made_to_fit(udp_capture: socket.socket, error: str, sent: str) -> None:
    agent = FakeAgent(engine_report(error=error))
    sender = sender_for(agent, udp_capture)
    try:
        assert sender.send_once() == 1
        (hb,) = receive(udp_capture)
        assert hb.payload.error == sent
    finally:
        sender.stop()


def test_key_rotation(udp_capture: socket.socket) -> None:
    sender = sender_for(FakeAgent(engine_report()), udp_capture)
    try:
        sender.send_once()
        sender.set_key(NEW_KEY_ID, NEW_KEY)
        sender.send_once()
        assert [hb.key_id for hb in receive(udp_capture, 2)] == [KEY_ID, NEW_KEY_ID]
        with pytest.raises(ValueError):
            sender.set_key("k3", b"too short")
    finally:
        sender.stop()


def test_receivers_must_be_ip_addresses() -> None:
    with pytest.raises(ValueError):
        HeartbeatSender(FakeAgent(), [("localhost", 5555)], KEY_ID, KEY)


def test_keys_are_checked_at_construction() -> None:
    with pytest.raises(ValueError):
        HeartbeatSender(FakeAgent(), [("127.0.0.1", 5555)], KEY_ID, b"short")

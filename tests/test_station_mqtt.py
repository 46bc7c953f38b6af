"""MQTT against a real Mosquitto broker started on loopback by the tests: verdicts arrive in order
with QoS 1; the broker stopped and restarted mid-run loses none; a restarted publisher goes on
from the last acknowledged verdict; the retained status is online, then offline (last will)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("paho.mqtt")
import paho.mqtt.client as mqtt

from edge.cli.run import main
from edge.config import MqttConfig
from edge.decision import TriggerState
from edge.runtime import BUNDLED_MODEL
from edge.sinks import FrameResult, VerdictLog
from edge.station.mqtt import LogFollower, VerdictPublisher
from edge.station.status import StationStatus
from edge.types import Frame, Outcome, Verdict

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
)
EDGE_RUN = [sys.executable, "-m", "edge.cli.run"]

needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (apt install mosquitto)")
needs_model = pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason="bundled model not built")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Mosquitto on 127.0.0.1, persistent (a restart keeps subscriptions and queued messages)."""

    def __init__(self, folder: Path, listener: str = ""):
        """``listener``: more settings of the listener (its TLS files)."""
        self.port = free_port()
        self.folder = folder
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n{listener}allow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nlog_dest stderr\nlog_type error\n"
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"mosquitto did not start: {self.proc.stderr.read().decode()}"
                    ) from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its port")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean stop: it saves its persistence
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Subscriber:
    """A persistent-session QoS 1 subscriber to stampline/#, reconnecting on its own."""

    def __init__(self, port: int, client_id: str, tls: dict | None = None):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(0.1, 0.5)
        if tls is not None:
            self.client.tls_set(**tls)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("stampline/#", qos=1)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, rc, p: self.subscribed.set()
        self.subscribed = threading.Event()
        self.port = port

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def __enter__(self) -> Subscriber:
        self.client.connect("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the subscription was not acknowledged"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def verdict_seqs(self, station: str) -> list[int]:
        with self._lock:
            return [json.loads(p)["seq"] for t, p, _ in self.messages if t == f"stampline/{station}/verdict"]

    def stats(self, station: str) -> list[dict]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t == f"stampline/{station}/stats"]

    def statuses(self, station: str) -> list[str]:
        with self._lock:
            return [p.decode() for t, p, _ in self.messages if t == f"stampline/{station}/status"]

    def wait(self, what, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not what() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert what(), "timed out"


def in_order_without_duplicates(seqs: list[int]) -> list[int]:
    """The first arrival of each seq (a consumer drops the repeats); asserts they came in order."""
    first = list(dict.fromkeys(seqs))
    assert first == sorted(first), seqs
    return first


def log_verdicts(log: VerdictLog, publisher: VerdictPublisher | None, seqs: range) -> None:
    image = __import__("numpy").zeros((16, 16, 3), "uint8")
    for seq in seqs:
        outcome = Outcome.MISSING if seq % 3 == 0 else Outcome.OK
        # a fixed wall time: lines of the same seq length have the same length in bytes
        v = Verdict(seq, seq + 100, outcome, 1.7e9 + seq, 0.5, (0.1, 0.1, 0.4, 0.4), (seq,))
        result = FrameResult(Frame(image, time.monotonic(), seq), (0, 0, 16, 16), None, TriggerState(), v)
        log.write(result)
        if publisher is not None:
            publisher.write(result)


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path) as b:
        yield b


@needs_broker
def test_the_broker_stopped_and_restarted_mid_run_loses_no_verdict(broker, tmp_path, caplog):
    events = tmp_path / "verdicts.jsonl"
    cfg = MqttConfig(broker=f"127.0.0.1:{broker.port}", station="line1", reconnect_max_s=0.5)
    with Subscriber(broker.port, "consumer-1") as sub, VerdictLog(events) as log:
        with VerdictPublisher(cfg, events) as pub:
            log_verdicts(log, pub, range(1, 11))
            sub.wait(lambda: set(sub.verdict_seqs("line1")) >= set(range(1, 11)))
            assert sub.statuses("line1")[0] == "online"
            broker.stop()
            log_verdicts(log, pub, range(11, 21))  # while the broker is away
            time.sleep(1.0)
            assert not pub.connected and pub.unsent == 10
            broker.start()
            log_verdicts(log, pub, range(21, 26))
            sub.wait(lambda: set(sub.verdict_seqs("line1")) >= set(range(1, 26)))
            sub.wait(lambda: pub.unsent == 0)  # the broker's acknowledgements reach the publisher
            assert pub.connections >= 2
        sub.wait(lambda: sub.statuses("line1")[-1:] == ["offline"])  # a clean stop says so
    got = in_order_without_duplicates(sub.verdict_seqs("line1"))
    assert got == list(range(1, 26))
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    received = {json.loads(p)["seq"]: json.loads(p) for t, p, _ in sub.messages if t.endswith("/verdict")}
    assert [received[r["seq"]] for r in lines] == lines  # the log's lines, as written
    assert json.loads((tmp_path / "verdicts.jsonl.mqtt").read_text())["seq"] == 25
    # the journal (warnings only, by default) says the broker was lost, and that it is back
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    # (the loss is seen by the read loop, or by a publish: either says so)
    lost = (f"mqtt: lost 127.0.0.1:{broker.port}", "mqtt: publish failed")
    assert any(m.startswith(lost) for m in said), said
    assert any(m.startswith(f"mqtt: connected to 127.0.0.1:{broker.port} again;") for m in said), said


@needs_broker
def test_two_stations_of_one_name_are_told_why_the_broker_keeps_dropping_them(broker, tmp_path, caplog):
    """Two lines on one host with mqtt.station left out publish as one client id: the broker drops
    one each time the other connects. The journal says so instead of only 'lost' over and over."""
    cfg = MqttConfig(broker=f"127.0.0.1:{broker.port}", station="twin", reconnect_max_s=1.0)
    with caplog.at_level(logging.WARNING, logger="edge.station.mqtt"):
        with VerdictLog(tmp_path / "a.jsonl") as log_a, VerdictLog(tmp_path / "b.jsonl") as log_b:
            with VerdictPublisher(cfg, tmp_path / "a.jsonl"), VerdictPublisher(cfg, tmp_path / "b.jsonl"):
                log_verdicts(log_a, None, range(1, 3))
                log_verdicts(log_b, None, range(1, 3))
                deadline = time.monotonic() + 20
                while "another client may be connected" not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.1)
    assert "another client may be connected as 'stampline-twin'" in caplog.text, caplog.text
    assert "give each its own mqtt.station or mqtt.client_id" in caplog.text


@needs_broker
def test_a_restarted_publisher_goes_on_after_the_last_acknowledged_verdict(broker, tmp_path):
    events = tmp_path / "verdicts.jsonl"
    cfg = MqttConfig(
        broker=f"127.0.0.1:{broker.port}", station="line2", reconnect_max_s=0.5, stats_interval_s=0.2
    )
    status = StationStatus(station="line2")
    with Subscriber(broker.port, "consumer-2") as sub:
        with VerdictLog(events) as log:
            with VerdictPublisher(cfg, events, status) as pub:
                log_verdicts(log, pub, range(1, 6))
                sub.wait(lambda: len(set(sub.verdict_seqs("line2"))) == 5)
                sub.wait(lambda: sub.stats("line2"))
                stats = sub.stats("line2")[-1]
                assert stats["station"] == "line2" and "fps" in stats and "recent" not in stats
                assert stats["mqtt"]["connections"] == 1
            log_verdicts(log, None, range(6, 9))  # logged while no publisher runs
        with VerdictLog(events) as log, VerdictPublisher(cfg, events) as pub:
            assert pub.unsent_at_start == 3  # counted before the sending thread starts
            log_verdicts(log, pub, range(9, 11))
            sub.wait(lambda: len(set(sub.verdict_seqs("line2"))) == 10)
        time.sleep(0.3)
    assert sub.verdict_seqs("line2") == list(range(1, 11))  # nothing sent twice, none skipped


def test_the_follower_goes_through_rotated_files_in_order(tmp_path):
    events = tmp_path / "verdicts.jsonl"
    with VerdictLog(tmp_path / "one.jsonl") as log:
        log_verdicts(log, None, range(1, 2))
    line = (tmp_path / "one.jsonl").stat().st_size
    follower = LogFollower(events)
    assert follower.next() is None and not follower.has_more()  # no log yet
    with VerdictLog(events, max_bytes=4 * line, keep=10) as log:
        log_verdicts(log, None, range(1, 4))
        got = [follower.next()[0] for _ in range(2)]  # half-way through the first file ...
        log_verdicts(log, None, range(4, 13))  # ... when it is rotated, twice, under the follower
        assert log.rotations >= 2
        assert follower.has_more()
        while (item := follower.next()) is not None:
            got.append(item[0])
        assert got == list(range(1, 13)) and not follower.has_more()
        late = LogFollower(events)  # started before the log existed: from the oldest file
        assert [item[0] for item in iter(late.next, None)] == list(range(1, 13))
        lost = LogFollower(events)
        lost.seek((-1, 100))  # its file is gone (removed beyond keep): again from the oldest
        assert lost.has_more() and [item[0] for item in iter(lost.next, None)] == list(range(1, 13))


def test_the_follower_skips_gaps_and_says_what_rotation_removed_before_it_was_read(tmp_path, caplog):
    events = tmp_path / "verdicts.jsonl"
    with VerdictLog(tmp_path / "one.jsonl") as log:
        log_verdicts(log, None, range(1, 2))
    line = (tmp_path / "one.jsonl").stat().st_size
    follower = LogFollower(events)
    with VerdictLog(events, max_bytes=2 * line, keep=3) as log:  # two verdicts a file
        log_verdicts(log, None, range(1, 7))
        assert [follower.next()[0] for _ in range(3)] == [1, 2, 3]  # in the oldest file, held open
        saved, saved_seq = follower.position, follower.last_seq
        log_verdicts(log, None, range(7, 13))  # the oldest files are removed beyond keep
        (tmp_path / "verdicts.jsonl.2").rename(tmp_path / "archived.jsonl")  # and one archived
        got = [item[0] for item in iter(follower.next, None)]
        # the rest of its file (removed, but still open), then on from the oldest file left
        assert got == [4, 7, 8, 11, 12] and follower.lost == 4
        assert "verdicts 5-6 are no longer in the verdict log" in caplog.text
        assert "verdicts 9-10 are no longer in the verdict log" in caplog.text
        follower.close()
        # a saved position whose file is gone, its inode perhaps reused by a newer file: checked,
        # then from the oldest file, repeating nothing
        again = LogFollower(events)
        again.seek(saved, saved_seq)
        assert [item[0] for item in iter(again.next, None)] == [7, 8, 11, 12]
        again.close()


def test_a_line_written_as_the_log_rotates_under_the_follower_is_not_missed(tmp_path, monkeypatch, caplog):
    import edge.station.mqtt as mqtt_module

    events = tmp_path / "verdicts.jsonl"
    with VerdictLog(events, max_bytes=10**9, keep=5) as log:
        log_verdicts(log, None, range(1, 4))
        follower = LogFollower(events)
        assert [follower.next()[0] for _ in range(3)] == [1, 2, 3]
        real_inode, armed = mqtt_module._inode, [True]

        def writer_in_between(path):  # after the follower found the log's end, before it looks again
            if armed[0]:
                armed[0] = False
                log_verdicts(log, None, range(4, 5))
                log._rotate()
            return real_inode(path)

        monkeypatch.setattr(mqtt_module, "_inode", writer_in_between)
        assert follower.next()[0] == 4  # read from the rotated file before moving on
        log_verdicts(log, None, range(5, 6))
        assert [item[0] for item in iter(follower.next, None)] == [5]
        follower.close()
        # nothing was ever sent, and the first verdicts this run wrote are gone: that is said too
        (tmp_path / "verdicts.jsonl.1").unlink()
        fresh = LogFollower(events)
        fresh.expect_first = 1
        assert [item[0] for item in iter(fresh.next, None)] == [5] and fresh.lost == 4
        fresh.close()
    assert "verdicts 1-4 are no longer in the verdict log" in caplog.text


@needs_broker
def test_verdicts_logged_across_rotations_while_the_broker_is_away_all_arrive(broker, tmp_path):
    events = tmp_path / "verdicts.jsonl"
    cfg = MqttConfig(broker=f"127.0.0.1:{broker.port}", station="line3", reconnect_max_s=0.5)
    with Subscriber(broker.port, "consumer-3") as sub:
        with VerdictLog(events, max_bytes=1000, keep=50) as log:
            with VerdictPublisher(cfg, events) as pub:
                log_verdicts(log, pub, range(1, 6))
                sub.wait(lambda: pub.unsent == 0)
                broker.stop()
                log_verdicts(log, pub, range(6, 31))  # several rotations while the broker is away
            log_verdicts(log, None, range(31, 41))  # and more while no publisher runs
            assert log.rotations >= 5
            state = json.loads((tmp_path / "verdicts.jsonl.mqtt").read_text())
            assert state["seq"] == 5 and state["inode"] != events.stat().st_ino  # in a rotated file
            broker.start()
            with VerdictPublisher(cfg, events) as pub:
                assert pub.unsent_at_start == 35
                log_verdicts(log, pub, range(41, 46))
                sub.wait(lambda: pub.unsent == 0)
        time.sleep(0.3)
    assert in_order_without_duplicates(sub.verdict_seqs("line3")) == list(range(1, 46))


@needs_broker
@needs_model
def test_edge_run_publishes_its_verdicts_and_a_killed_run_is_made_good_by_the_next(broker, tmp_path):
    events = tmp_path / "verdicts.jsonl"
    common = ["--demo", "--as-fast-as-possible", "--mqtt", f"127.0.0.1:{broker.port}", "--station", "line3"]
    common += ["--events", str(events)]
    with Subscriber(broker.port, "consumer-3") as sub:
        proc = subprocess.Popen(
            [*EDGE_RUN, *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            sub.wait(lambda: len(sub.verdict_seqs("line3")) >= 3, timeout=60)
            assert "online" in sub.statuses("line3")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "mqtt to 127.0.0.1" in proc.stdout.read()
        sub.wait(lambda: sub.statuses("line3")[-1:] == ["offline"])  # the last will
        # the next run sends what the killed one logged but never got acknowledged
        assert main([*common, "--max-frames", "150"]) == 0
        logged = [json.loads(line)["seq"] for line in events.read_text().splitlines()]
        sub.wait(lambda: set(sub.verdict_seqs("line3")) >= set(logged))
        time.sleep(0.3)
    assert in_order_without_duplicates(sub.verdict_seqs("line3")) == logged
    assert sub.statuses("line3")[-1] == "offline"


@needs_model
def test_an_unreachable_broker_does_not_stop_the_inspection(tmp_path, caplog):
    events = tmp_path / "verdicts.jsonl"
    argv = ["--demo", "--as-fast-as-possible", "--max-frames", "200", "--events", str(events)]
    assert main([*argv, "--mqtt", f"127.0.0.1:{free_port()}"]) == 0
    n = len(events.read_text().splitlines())
    assert n >= 1 and "cannot reach 127.0.0.1" in caplog.text
    assert (
        f"mqtt: {n} verdicts not yet sent; those the log still holds go out after the next start"
        in caplog.text
    )


def test_a_state_file_pointing_after_a_line_that_is_not_a_verdict_scans_the_log(tmp_path, caplog):
    """The line before the state's offset is JSON but no verdict record (a bare number): the state
    does not match, the log is read again from its start (it was an AttributeError in the
    publisher's thread: no verdict ever sent)."""
    events = tmp_path / "verdicts.jsonl"
    records = [json.dumps({"seq": n, "product_id": n, "result": "OK"}) for n in (1, 2, 3)]
    events.write_text("5\n" + "\n".join(records) + "\n")
    (tmp_path / "verdicts.jsonl.mqtt").write_text(json.dumps({"seq": 5, "offset": 2}) + "\n")
    cfg = MqttConfig(broker=f"127.0.0.1:{free_port()}", station="line9", reconnect_max_s=0.5)
    with caplog.at_level(logging.WARNING, logger="edge.station.mqtt"):
        with VerdictPublisher(cfg, events) as pub:
            assert pub.unsent_at_start == 3  # seq 5 is above the log's 3: it started again, all go
    assert "does not match the verdict log; scanning the log" in caplog.text


@needs_model
def test_a_broker_that_drops_each_connection_at_once_is_not_hammered(tmp_path, caplog):
    """A broker (or a firewall) that accepts and closes: the reconnects back off as after a
    failed connection (before: 541 reconnects and journal lines in 25 s)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    accepted, done = [], threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(time.monotonic())
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.recv(1024)  # CONNECT
                    conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted ... and gone
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    events = tmp_path / "verdicts.jsonl"
    argv = [
        "--demo",
        "--duration",
        "5",
        "--events",
        str(events),
        "--mqtt",
        f"127.0.0.1:{server.getsockname()[1]}",
    ]
    try:
        assert main(argv) == 0
    finally:
        done.set()
        thread.join()
        server.close()
    assert 2 <= len(accepted) <= 6, len(accepted)  # 0.5 + 1 + 2 s of back-off, not one every few ms
    assert caplog.text.count("mqtt: lost") <= 6
    if len(accepted) >= 3:  # three brief sessions in a row: the journal says what may cause them
        assert caplog.text.count("dropped the last 3 connections within 10 s of making them") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--mqtt", "broker:0"],
            "argument --mqtt: expected HOST or HOST:PORT (port 1..65535), got 'broker:0'",
        ),
        (["--mqtt", "localhost"], "mqtt.broker: expected output.events too"),
        (
            ["--mqtt", "localhost", "--events", "e.jsonl", "--station", "a/b"],
            "mqtt.station: expected one MQTT",
        ),
    ],
)
def test_bad_mqtt_settings_are_one_line_errors(argv, message, capsys):
    try:
        code = main(["--demo", *argv, "--max-frames", "1"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_missing_paho_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    from edge.station.common import StationError

    pub = VerdictPublisher(MqttConfig(broker="localhost"), tmp_path / "v.jsonl")
    with pytest.raises(StationError, match=r"mqtt.broker: paho-mqtt is not installed: pip install"):
        pub.__enter__()


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path):
    """A plant's CA, the broker's certificate from it (for localhost and 127.0.0.1), a station's
    certificate from it, and another CA; PEM files in tmp_path/pki."""
    trustme = pytest.importorskip("trustme")
    folder = tmp_path / "pki"
    folder.mkdir()
    files = {}
    ca, other = trustme.CA(), trustme.CA()
    broker, station = ca.issue_cert("localhost", "127.0.0.1"), ca.issue_cert("line1.plant.local")
    # valid from 2001 to 2002: to a station whose clock is right, expired
    old = ca.issue_cert(
        "localhost",
        not_before=dt.datetime(2001, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2002, 1, 1, tzinfo=dt.UTC),
    )
    for name, blob in [
        ("broker_2001", old.cert_chain_pems[0]),
        ("broker_2001_key", old.private_key_pem),
        ("ca", ca.cert_pem),
        ("other_ca", other.cert_pem),
        ("broker", broker.cert_chain_pems[0]),
        ("broker_key", broker.private_key_pem),
        ("station", station.cert_chain_pems[0]),
        ("station_key", station.private_key_pem),
    ]:
        files[name] = folder / f"{name}.pem"
        blob.write_to_path(files[name])
    return files


def tls_broker(folder: Path, pki: dict, require_certificate: bool, cert: str = "broker") -> Broker:
    return Broker(
        folder,
        f"cafile {pki['ca']}\ncertfile {pki[cert]}\nkeyfile {pki[cert + '_key']}\n"
        f"require_certificate {str(require_certificate).lower()}\n",
    )


@needs_broker
def test_verdicts_reach_a_tls_broker_that_asks_for_the_station_certificate(tmp_path, pki):
    events = tmp_path / "verdicts.jsonl"
    station = {"ca_file": pki["ca"], "cert_file": pki["station"], "key_file": pki["station_key"]}
    cfg = MqttConfig(broker="localhost", station="line1", tls=True, reconnect_max_s=0.5, **station)
    consumer = {
        "ca_certs": str(pki["ca"]),
        "certfile": str(pki["station"]),
        "keyfile": str(pki["station_key"]),
    }
    with tls_broker(tmp_path, pki, require_certificate=True) as broker:
        cfg = dataclasses.replace(cfg, broker=f"localhost:{broker.port}")
        with Subscriber(broker.port, "consumer-tls", consumer) as sub, VerdictLog(events) as log:
            with VerdictPublisher(cfg, events) as pub:
                log_verdicts(log, pub, range(1, 8))
                sub.wait(lambda: pub.unsent == 0)
                assert pub.connected and pub.problem == ""
            assert in_order_without_duplicates(sub.verdict_seqs("line1")) == list(range(1, 8))


@needs_broker
@pytest.mark.parametrize(
    ("host", "station", "why"),
    [
        # the broker's certificate from a CA the station was not told of
        ("localhost", {"ca_file": "other_ca"}, "TLS: the broker's certificate is not trusted"),
        # no ca_file: the system's CAs, which never signed a test CA's certificate
        ("localhost", {}, "TLS: the broker's certificate is not trusted"),
        # a broker that asks for the station's certificate, and none set
        ("localhost", {"ca_file": "ca"}, "closed before accepting the connection; as a broker does"),
    ],
)
def test_a_tls_connection_that_fails_keeps_the_verdicts_and_the_journal_says_why(
    tmp_path, pki, caplog, host, station, why
):
    events = tmp_path / "verdicts.jsonl"
    files = {key: pki[name] for key, name in station.items()}
    with tls_broker(tmp_path, pki, require_certificate=True) as broker, VerdictLog(events) as log:
        cfg = MqttConfig(
            broker=f"{host}:{broker.port}",
            station="line1",
            tls=True,
            reconnect_max_s=0.2,
            flush_s=0.2,
            **files,
        )
        with VerdictPublisher(cfg, events) as pub:
            log_verdicts(log, pub, range(1, 4))
            deadline = time.monotonic() + 10
            while why not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not pub.connected and pub.unsent == 3
    line = next(r.getMessage() for r in caplog.records if "cannot reach" in r.getMessage())
    assert line.startswith(f"mqtt: cannot reach {host}:{broker.port} (") and why in line, line
    assert "verdicts wait in the log" in line
    assert len(events.read_text().splitlines()) == 3  # kept for the next connection


@needs_broker
def test_a_certificate_not_valid_by_the_station_clock_says_to_check_the_clock(tmp_path, pki, caplog):
    """A Pi that started in the past (no clock of its own, NTP not yet reached) finds a good
    certificate "not yet valid"; one whose certificate ran out finds it "expired". Either way the
    journal names the clock's reading, not the CA file."""
    events = tmp_path / "verdicts.jsonl"
    with tls_broker(tmp_path, pki, False, cert="broker_2001") as broker, VerdictLog(events) as log:
        cfg = MqttConfig(
            broker=f"localhost:{broker.port}", tls=True, ca_file=pki["ca"], reconnect_max_s=0.2, flush_s=0.2
        )
        with VerdictPublisher(cfg, events) as pub:
            log_verdicts(log, pub, range(1, 3))
            deadline = time.monotonic() + 10
            while "cannot reach" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
    line = next(r.getMessage() for r in caplog.records if "cannot reach" in r.getMessage())
    assert "the broker's certificate (or its CA's) is not valid now (certificate has expired)" in line
    assert f"by this station's clock, which reads {time.strftime('%Y-%m-%d', time.gmtime())}" in line
    assert "mqtt.ca_file" not in line


@needs_broker
def test_a_broker_name_the_certificate_does_not_carry_is_refused(tmp_path, pki, caplog):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca2.pem")
    cert = ca.issue_cert("mqtt.plant.local")  # not 127.0.0.1
    cert.cert_chain_pems[0].write_to_path(tmp_path / "b2.pem")
    cert.private_key_pem.write_to_path(tmp_path / "b2.key")
    broker = Broker(
        tmp_path, f"cafile {tmp_path}/ca2.pem\ncertfile {tmp_path}/b2.pem\nkeyfile {tmp_path}/b2.key\n"
    )
    events = tmp_path / "verdicts.jsonl"
    with broker, VerdictLog(events) as log:
        cfg = MqttConfig(
            broker=f"127.0.0.1:{broker.port}", tls=True, ca_file=tmp_path / "ca2.pem", flush_s=0.2
        )
        with VerdictPublisher(cfg, events) as pub:
            log_verdicts(log, pub, range(1, 2))
            deadline = time.monotonic() + 10
            while not pub.problem and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not pub.connected
    assert "mismatch" in pub.problem and "a name or address the certificate carries" in pub.problem, (
        pub.problem
    )


def test_a_broker_port_that_accepts_and_never_answers_is_said_to_be_silent(tmp_path, monkeypatch):
    import edge.station.mqtt as station_mqtt

    monkeypatch.setattr(station_mqtt, "CONNECT_TIMEOUT_S", 0.5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # the kernel accepts; nothing ever answers
    try:
        cfg = MqttConfig(broker=f"127.0.0.1:{silent.getsockname()[1]}", flush_s=0.1)
        pub = VerdictPublisher(cfg, tmp_path / "v.jsonl")
        pub._mqtt = mqtt
        assert pub._connect() is None
        assert pub.problem == "no answer to the connection within 0.5 s"
    finally:
        silent.close()


class WrappingClient:
    """The network boundary: a paho client whose message ids wrap after ``ids`` (paho's: 65535),
    which reports a QoS 0 message (the stats) as published when it sends it, and whose broker
    acknowledges the first ``acks`` QoS 1 messages only; then the link is silent, and after a
    few more rounds found dead (the keepalive)."""

    def __init__(self, ids: int, acks: int):
        self.ids, self.acks = ids, acks
        self.rounds_left = 3
        self.on_publish = None
        self._mid = 0
        self._to_report: list[int] = []
        self.acked_seqs: list[int] = []  # the verdicts the broker really acknowledged
        self._seq_of: dict[int, int] = {}

    def publish(self, topic, payload, qos=0, retain=False):
        self._mid = self._mid % self.ids + 1
        if qos == 0:
            self._to_report.append(self._mid)
        elif self.acks > 0:
            self.acks -= 1
            self._to_report.append(self._mid)
            if topic.endswith("/verdict"):
                self.acked_seqs.append(json.loads(payload)["seq"])
        return type("Info", (), {"mid": self._mid, "rc": 0, "is_published": lambda _: True})()

    def loop(self, timeout=0.0):
        reported, self._to_report = self._to_report, []
        for mid in reported:
            self.on_publish(self, None, mid, 0, None)
        time.sleep(0.001)
        if self.acks == 0:
            self.rounds_left -= 1
        return 0 if self.rounds_left > 0 else 7  # MQTT_ERR_CONN_LOST

    def disconnect(self):
        pass


def test_a_verdict_counts_as_acknowledged_only_on_its_own_acknowledgement(tmp_path):
    """paho's ids wrap (65535; 10 here) and it reports the stats when sent: an id once seen for
    them must not acknowledge a later verdict that the broker never did (it would never be sent
    again, and a restart would go on after it)."""
    import types

    events = tmp_path / "verdicts.jsonl"
    with VerdictLog(events) as log:
        log_verdicts(log, None, range(1, 61))
    cfg = MqttConfig(broker="127.0.0.1:1", station="w", stats_interval_s=1e-6, max_inflight=2, flush_s=0.1)
    pub = VerdictPublisher(cfg, events, StationStatus(station="w"))
    pub._mqtt = types.SimpleNamespace(MQTT_ERR_SUCCESS=0, error_string=str)
    pub.last_logged_seq = 60
    # the stats every round: their ids come round again and again while the broker acknowledges
    client = WrappingClient(ids=10, acks=25)  # "online" and 24 verdicts acknowledged, then silence
    session = threading.Thread(target=pub._session, args=(client,), daemon=True)
    session.start()
    session.join(5)
    assert not session.is_alive()  # the link found dead ends the session
    assert client.acked_seqs == list(range(1, 25))
    assert pub.acked_seq == 24 and pub.unsent == 36  # not one verdict more than the broker said
    assert json.loads((tmp_path / "verdicts.jsonl.mqtt").read_text())["seq"] == 24


def test_the_tls_port_is_8883_unless_given():
    assert VerdictPublisher(MqttConfig(broker="mqtt.plant.local", tls=True), Path("v.jsonl")).port == 8883
    assert VerdictPublisher(MqttConfig(broker="mqtt.plant.local"), Path("v.jsonl")).port == 1883
    assert (
        VerdictPublisher(MqttConfig(broker="mqtt.plant.local:9000", tls=True), Path("v.jsonl")).port == 9000
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ('ca_file = "{ca}"', "mqtt.ca_file: expected mqtt.tls = true too"),
        ('tls = true\nkey_file = "{station_key}"', "mqtt.key_file: expected mqtt.cert_file too"),
        (
            'tls = true\nca_file = "{missing}"',
            "mqtt.ca_file: cannot read {missing} (No such file or directory)",
        ),
        ('tls = true\nca_file = "{garbage}"', "mqtt.ca_file: {garbage} is not a PEM certificate"),
        (
            'tls = true\ncert_file = "{station}"\nkey_file = "{broker_key}"',
            "mqtt.key_file: {broker_key} holds a key that is not the key of mqtt.cert_file's certificate",
        ),
        (
            'tls = true\ncert_file = "{station}"',
            "mqtt.cert_file: {station} is not a PEM private key (no PRIVATE KEY",
        ),
        (
            'tls = true\ncert_file = "{station}"\nkey_file = "{garbage}"',
            "mqtt.key_file: {garbage} is not a PEM private key",
        ),
        (
            'tls = true\ncert_file = "{garbage}"\nkey_file = "{station_key}"',
            "mqtt.cert_file: {garbage} is not a PEM certificate",
        ),
        (
            'tls = true\ncert_file = "{station}"\nkey_file = "{locked}"',
            "mqtt.key_file: {locked} holds a key with a passphrase; expected one without",
        ),
    ],
)
def test_bad_tls_settings_are_one_line_errors_before_the_run(tmp_path, pki, capsys, settings, message):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki["station_key"].read_bytes(), None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    names = {**pki, "missing": tmp_path / "nope.pem", "garbage": tmp_path / "garbage.pem", "locked": locked}
    config = tmp_path / "station.toml"
    config.write_text(
        f'[source]\nkind = "demo"\n[output]\nevents = "{tmp_path}/v.jsonl"\n'
        f'[mqtt]\nbroker = "localhost"\n{settings.format(**names)}\n'
    )
    for argv in (["--check-config", str(config)], ["--config", str(config), "--max-frames", "1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message.format(**names) in err, err

"""The live web view: endpoints, token, metrics, the MJPEG stream encoded only while watched, and
the page in a real headless browser (Debian's chromium) while the demo runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import cv2
import numpy as np
import pytest

pytest.importorskip("prometheus_client")

from edge.cli.run import main
from edge.config import Config, HttpConfig
from edge.decision import TriggerState
from edge.runtime import BUNDLED_MODEL
from edge.sinks import FrameResult
from edge.station.status import StationStatus
from edge.station.web import WebView
from edge.types import Frame, Outcome, Verdict

TOKEN = "s3cret-token-42"
EDGE_RUN = [sys.executable, "-m", "edge.cli.run"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

needs_model = pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason="bundled model not built")


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0):
    """(status, headers, body) of a GET, errors included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def raw_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """(status, headers) of a GET, redirects not followed."""
    import http.client

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        r = conn.getresponse()
        r.read()
        return r.status, dict(r.getheaders())
    finally:
        conn.close()


def read_mjpeg(url: str, parts: int, timeout: float = 15.0) -> list[bytes]:
    """The first ``parts`` JPEGs of a multipart/x-mixed-replace stream."""
    out = []
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        while len(out) < parts:
            assert r.readline() == b"--frame\r\n"
            headers = {}
            while (line := r.readline()) != b"\r\n":
                key, _, value = line.decode().partition(":")
                headers[key.lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            out.append(r.read(int(headers["content-length"])))
            assert r.readline() == b"\r\n"
    return out


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    """edge-run on the paced demo line with the web view on a free loopback port and a token, kept
    in a file as a service keeps it (http.token_file; --http-token sets the same setting)."""
    if not BUNDLED_MODEL.is_file():
        pytest.skip("bundled model not built")
    tmp = tmp_path_factory.mktemp("web")
    (tmp / "http-token").write_text(TOKEN + "\n")
    (tmp / "station.toml").write_text('[http]\ntoken_file = "http-token"\n')  # beside the config
    cmd = [*EDGE_RUN, "--config", str(tmp / "station.toml"), "--demo", "--seed", "6", "--duration", "120"]
    cmd += ["--http", "127.0.0.1:0", "--events", str(tmp / "verdicts.jsonl")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"web view on (http://127\.0\.0\.1:\d+/)", line)
            url = m.group(1) if m else None
        assert url is not None, proc.stderr.read() if proc.poll() is not None else "no web view line"
        while get(url + "healthz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # the model loads, then frames flow
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()


def status(url: str) -> dict:
    code, _, body = get(url + "api/status", {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200
    return json.loads(body)


def test_the_token_flag_stands_in_for_the_configs_token_file(tmp_path):
    from edge.cli.run import build_parser, overrides_from

    config = tmp_path / "station.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:0"\ntoken_file = "missing"\n')
    args = build_parser().parse_args(["--config", str(config), "--http-token", "from-the-flag"])
    loaded = Config.load(config, overrides_from(args))
    assert (loaded.http.token, loaded.http.token_file) == ("from-the-flag", None)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            'token = "abcdefgh1"\ntoken_file = "t"',
            "http.token_file: expected http.token or http.token_file, not both",
        ),
        ('token_file = "none"', "http.token_file: cannot read {tmp}/none (No such file or directory)"),
        ('token_file = "short"', "http.token_file: {tmp}/short: expected at least 8 characters"),
        ('token_file = "quote"', "http.token_file: {tmp}/quote: expected at least 8 characters"),
    ],
)
def test_a_token_file_that_is_not_a_token_is_a_one_line_error(tmp_path, capsys, settings, message):
    from edge.cli.run import main

    (tmp_path / "short").write_text("zq7\n")
    (tmp_path / "quote").write_text('zq7"defgh;ij\n')  # a cookie would not carry it
    config = tmp_path / "station.toml"
    config.write_text(f'[source]\nkind = "demo"\n[http]\nlisten = "127.0.0.1:0"\n{settings}\n')
    for argv in (["--check-config", str(config)], ["--config", str(config), "--max-frames", "1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message.format(tmp=tmp_path) in err, err
        assert "zq7" not in err  # the file's content stays out of the journal


@needs_model
def test_the_token_guards_everything_but_healthz(station):
    assert get(station + "healthz")[0] == 200
    for path in ("", "api/status", "metrics", "stream.mjpg", "thumb/1.jpg"):
        assert get(station + path)[0] == 401, path
    assert get(station + "?token=wrong-token")[0] == 401
    code, headers = raw_get(station + f"?token={TOKEN}&x=1")  # the token off the address bar at once
    assert code == 303 and headers["Location"] == "./?x=1"  # relative: a proxy's sub-path too
    assert "SameSite=Lax" in headers["Set-Cookie"]  # a link from a wiki or dashboard opens the view
    cookie = headers["Set-Cookie"].split(";")[0]
    port = urllib.parse.urlsplit(station).port  # per port: two lines' views on one host kept apart
    assert "HttpOnly" in headers["Set-Cookie"] and cookie == f"stampline_token_{port}={TOKEN}"
    assert "Secure" not in headers["Set-Cookie"]  # plain HTTP here; behind an HTTPS proxy, Secure:
    _, proxied = raw_get(station + f"?token={TOKEN}", {"X-Forwarded-Proto": "https"})
    assert proxied["Set-Cookie"].endswith("; Secure")
    assert get(station, {"Cookie": f"stampline_token_{port + 1}={TOKEN}"})[0] == 401  # another line's
    code, _, body = get(station, {"Cookie": cookie})
    assert code == 200 and b"<title>Stampline" in body and TOKEN.encode() not in body
    assert get(station + "api/status", {"Cookie": cookie})[0] == 200
    assert get(station + f"api/status?token={TOKEN}")[0] == 200  # a scraper's query still works
    assert get(station + "metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert get(station + "metrics", {"Authorization": f"bearer {TOKEN}"})[0] == 200  # any case
    assert get(station + "nowhere", {"Cookie": cookie})[0] == 404
    # another web app's cookies on the same host, before ours (each made the token go unseen: 401)
    for other in ('pref={"theme":"dark"}', "name=Jos\u00e9", 'x="open', "a b=c"):
        assert get(station + "api/status", {"Cookie": f"{other}; {cookie}"})[0] == 200, other
    assert get(station + "api/status", {"Cookie": f'pref={{"a":1}}; {cookie}x'})[0] == 401


@needs_model
def test_status_and_metrics_count_the_same_run(station):
    deadline = time.monotonic() + 30
    while (s := status(station))["inspected"] < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert s["healthy"] and s["model_id"] and s["fps"] > 0 and s["inferences"] > 0
    assert s["inspected"] == sum(s["counts"].values()) >= 1
    assert s["recent"][0]["seq"] == s["inspected"]
    code, headers, body = get(station + "metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200
    text = body.decode()
    assert headers["Content-Type"].startswith("text/plain")

    def value(name: str) -> float:
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert m, name
        return float(m.group(1))

    verdicts = sum(value(f'stampline_verdicts_total{{result="{r}"}}') for r in ("OK", "MISSING", "WRONG"))
    assert verdicts >= s["inspected"]
    assert value("stampline_frames_total") >= s["frames"]
    assert value("stampline_invoke_seconds_count") >= s["inferences"]
    assert value("stampline_latency_seconds_count") == value("stampline_frames_total")
    assert value("stampline_camera_connected") == 1 and value("stampline_healthy") == 1
    assert value('stampline_fault{kind="camera"}') == 0
    assert "stampline_frames_dropped_total" in text
    assert f'model_id="{s["model_id"]}"' in text


@needs_model
def test_frames_are_encoded_only_while_someone_watches(station):
    time.sleep(1.5)  # a viewer of an earlier test has gone
    before = status(station)["stream"]
    time.sleep(1.0)
    idle = status(station)["stream"]
    assert idle["viewers"] == 0 and idle["encoded"] == before["encoded"]
    jpegs = read_mjpeg(station + f"stream.mjpg?token={TOKEN}", parts=4)
    images = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    assert all(im is not None and im.shape == (480, 640, 3) for im in images)
    assert not np.array_equal(images[0], images[-1])  # a live stream, not one picture
    time.sleep(1.0)
    after = status(station)["stream"]
    assert after["viewers"] == 0 and after["encoded"] >= idle["encoded"] + 4
    time.sleep(1.0)
    assert status(station)["stream"]["encoded"] == after["encoded"]


def test_healthz_answers_503_until_frames_flow_and_when_they_stop():
    now = [100.0]
    status = StationStatus(stall_s=2.0, clock=lambda: now[0])
    with WebView(HttpConfig(listen="127.0.0.1:0"), status) as view:
        code, _, body = get(view.url + "healthz")
        assert code == 503 and body.startswith(b"starting")
        image = np.zeros((48, 64, 3), np.uint8)
        status.write(FrameResult(Frame(image, now[0], 0), (0, 0, 64, 48), None, TriggerState()))
        assert get(view.url + "healthz")[:3:2] == (200, b"ok: frames flow\n")
        now[0] += 3.0
        code, _, body = get(view.url + "healthz")
        assert code == 503 and b"no frame through the loop for 3.0 s" in body
        status.set_fault("camera", "no frame for 3.0 s")
        assert b"camera: no frame" in get(view.url + "healthz")[2]
        assert get(view.url + "metrics")[0] == 404  # no metrics given to this view


def test_clients_that_never_finish_a_request_are_cut_and_capped(monkeypatch):
    """Slow or half-open clients (a slowloris attack needs no token) must not take the process's
    threads and file handles: the headers have a deadline and connections a cap."""
    import socket

    import edge.station.web as web

    monkeypatch.setattr(web, "HEADER_DEADLINE_S", 1.5)
    with WebView(HttpConfig(listen="127.0.0.1:0"), StationStatus()) as view:
        slow = socket.create_connection(("127.0.0.1", view.port))
        slow.sendall(b"GET / HTTP/1.1\r\n")  # and then a byte now and then: never the end
        slow.settimeout(0.3)
        t0, closed = time.monotonic(), False
        while not closed and time.monotonic() - t0 < web.HEADER_DEADLINE_S + 5:
            try:
                closed = slow.recv(1024) == b""
            except TimeoutError:
                slow.sendall(b"X")
            except OSError:
                closed = True
        assert closed and time.monotonic() - t0 < web.HEADER_DEADLINE_S + 1.0  # cut, however it trickles
        slow.close()
        # the cut connection's handler thread gives its slot back a moment after the client sees
        # the close: wait for it, or one connection more than the 8 over the cap is refused
        deadline = time.monotonic() + 3.0
        while view._server._slots._value < web.MAX_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.02)
        # one address holds at most MAX_PER_CLIENT (32 idle connections of one host locked every
        # viewer, /healthz and /metrics out); all addresses together MAX_CONNECTIONS
        idle = [socket.create_connection(("127.0.0.1", view.port)) for _ in range(web.MAX_PER_CLIENT + 4)]
        deadline = time.monotonic() + 3.0
        while view._server.refused < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert view._server.refused == 4
        for k in range(2, 2 + (web.MAX_CONNECTIONS - web.MAX_PER_CLIENT) // web.MAX_PER_CLIENT + 1):
            for _ in range(web.MAX_PER_CLIENT):  # other hosts (loopback addresses of their own)
                idle.append(
                    socket.create_connection(("127.0.0.1", view.port), source_address=(f"127.0.0.{k}", 0))
                )
        deadline = time.monotonic() + 3.0
        while view._server.refused < 4 + web.MAX_PER_CLIENT and time.monotonic() < deadline:
            time.sleep(0.05)
        assert view._server.refused == 4 + web.MAX_PER_CLIENT  # the ones over the cap were closed at once
        for conn in idle:
            conn.close()
        time.sleep(web.HEADER_DEADLINE_S + 0.6)  # the slots come back
        assert get(view.url + "healthz")[0] in (200, 503)


def test_clients_that_drop_their_connection_leave_no_traceback_in_the_journal(capfd):
    """Each client that reset its connection mid-request (a phone losing Wi-Fi, a scraper timing
    out) put the standard library's 27-line traceback on stderr, the service's journal."""
    import socket
    import struct

    with WebView(HttpConfig(listen="127.0.0.1:0"), StationStatus()) as view:
        for _ in range(5):
            conn = socket.create_connection(("127.0.0.1", view.port), timeout=5)
            conn.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # a reset, not a goodbye
        time.sleep(0.5)
        assert get(view.url + "healthz")[0] == 503  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ConnectionResetError" not in err, err


def test_a_viewer_that_leaves_while_no_frames_come_frees_its_slot():
    """A stalled camera: no frame is written to the stream, and an operator reloads the page;
    each viewer that left gives its slot back at once, not at the next frame."""
    import socket

    with WebView(HttpConfig(listen="127.0.0.1:0", max_viewers=2), StationStatus()) as view:
        for _ in range(4):  # more than max_viewers, one after the other
            conn = socket.create_connection(("127.0.0.1", view.port), timeout=5)
            conn.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert conn.recv(1024).startswith(b"HTTP/1.1 200")
            assert view.viewers == 1
            conn.close()
            deadline = time.monotonic() + 3.0
            while view.viewers and time.monotonic() < deadline:
                time.sleep(0.05)
            assert view.viewers == 0


def test_odd_requests_get_plain_answers(tmp_path):
    import socket

    with WebView(HttpConfig(listen="127.0.0.1:0"), StationStatus()) as view:
        _code, headers = raw_get(view.url + "healthz")
        assert headers["Server"] == "stampline", headers  # no Python version
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /"
        with socket.create_connection(("127.0.0.1", view.port), timeout=5) as conn:
            conn.sendall(smuggled)
            assert conn.recv(1024).startswith(b"HTTP/1.1 400")
        # two lengths, the first 0: the rest was served as a second request (a proxy in front
        # reading the other length would pass it unchecked)
        doubled = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 18\r\n\r\n"
        with socket.create_connection(("127.0.0.1", view.port), timeout=5) as conn:
            conn.sendall(doubled + b"GET /api/status HTTP/1.1\r\n\r\n")
            answer = conn.recv(4096)
            assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1") == 1, answer
        # not to be framed by another site's page
        assert (
            headers["X-Frame-Options"] == "DENY"
            and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        )
        assert (
            get(view.url + "thumb/%C2%B2.jpg")[0] == 404
            and get(view.url + "thumb/" + "9" * 40 + ".jpg")[0] == 404
        )
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", view.port, timeout=5)
        conn.request("HEAD", "/api/status")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b""
        conn.request("GET", "/api/status")  # the same kept-alive connection: a body again
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["frames"] == 0
        conn.close()
        # without a token, a page of another site (its own name pointed at this machine) is refused
        assert raw_get(view.url + "api/status", {"Host": "rebind.attacker.example"})[0] == 403
        assert raw_get(view.url + "api/status", {"Host": f"localhost:{view.port}"})[0] == 200
        for host in (
            f"[::1]:{view.port}",
            "[::1]",
            f"{socket.getfqdn().upper()}.:8080",
            f"127.0.0.1:{view.port}",
        ):
            assert raw_get(view.url + "api/status", {"Host": host})[0] == 200, host
        assert raw_get(view.url + "healthz", {"Host": "rebind.attacker.example"})[0] in (200, 503)


def test_the_verdict_rate_holds_a_bounded_window_when_nothing_reads_it():
    # a station without the web view or MQTT never asks for the rate: months of verdicts must
    # not pile up in memory, and the rate read afterwards still counts the last minute only
    now = [0.0]
    status = StationStatus(clock=lambda: now[0])
    image = np.zeros((48, 64, 3), np.uint8)
    for seq in range(1, 3001):  # one verdict a second for 50 minutes
        now[0] = float(seq)
        verdict = Verdict(seq, seq, Outcome.OK, 1.7e9 + seq, 0.9, (0.1, 0.1, 0.4, 0.4), (seq,))
        status.write(FrameResult(Frame(image, now[0], seq), (0, 0, 64, 48), None, TriggerState(), verdict))
    assert len(status._verdict_times) <= 61
    assert status.snapshot()["rate_per_min"] == pytest.approx(60.0, abs=1.0)
    assert status.counts[Outcome.OK] == 3000


def test_a_port_in_use_and_bad_addresses_are_one_line_errors(capsys):
    with WebView(HttpConfig(listen="127.0.0.1:0"), StationStatus()) as view:
        port = view.port
        assert main(["--demo", "--http", f"127.0.0.1:{port}", "--max-frames", "2"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"http.listen: cannot listen on 127.0.0.1:{port}" in err
    for bad in ("localhost:http", "1.2.3.4:70000", "a b:80", "host"):
        with pytest.raises(SystemExit) as exc:
            main(["--demo", "--http", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "argument --http: expected HOST:PORT" in err, err


@needs_model
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromedriver not installed")
def test_the_page_in_a_headless_browser_shows_the_stream_and_counters_that_move(station, tmp_path):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium never downloads a driver here
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=412,915",  # a phone
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(station + f"?token={TOKEN}")
        wait = WebDriverWait(driver, 20, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "health").text == "running")
        assert TOKEN not in driver.current_url  # the page works on the cookie alone
        wait.until(lambda d: d.execute_script("return document.getElementById('stream').naturalWidth") == 640)

        def number(name: str) -> int:
            text = driver.find_element(By.ID, name).text
            return int(text) if text.isdigit() else -1

        frames, inspected = number("frames"), number("inspected")
        assert frames > 0 and inspected >= 0
        wait.until(lambda d: number("frames") > frames + 30)
        WebDriverWait(driver, 30, poll_frequency=0.5).until(lambda d: number("inspected") > inspected)
        assert driver.find_element(By.ID, "model").text == status(station)["model_id"]
        assert driver.find_elements(By.CSS_SELECTOR, "#recent li .v")  # the last verdicts
        # scores read as on the frames: rounded down, so none reads as the threshold it missed
        said = driver.execute_script("return [0.4961, 0.29, 0.5, 1].map(score)")
        assert said == ["0.49", "0.29", "0.50", "1.00"]
        # readable on a phone: nothing wider than the screen
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        # the stream keeps changing in the page itself
        grab = "const c=document.createElement('canvas');const i=document.getElementById('stream');"
        grab += "c.width=64;c.height=48;const x=c.getContext('2d');x.drawImage(i,0,0,64,48);"
        grab += "return Array.from(x.getImageData(0,0,64,48).data).reduce((a,b)=>a+b,0);"
        first = driver.execute_script(grab)
        WebDriverWait(driver, 10, poll_frequency=0.2).until(lambda d: d.execute_script(grab) != first)
        driver.save_screenshot(str(tmp_path / "page.png"))
        if os.environ.get("STAMPLINE_SCREENSHOT"):
            shutil.copy(tmp_path / "page.png", os.environ["STAMPLINE_SCREENSHOT"])
    finally:
        driver.quit()
    assert (tmp_path / "page.png").stat().st_size > 10_000

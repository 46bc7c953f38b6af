"""The station's config keys ([gpio], [http], [mqtt], [watchdog]): typed, checked, named in errors,
overridden by flags, documented in the example; the unit's sandboxing measured."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.cli.run import build_parser, main, overrides_from
from edge.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "systemd" / "stampline.toml"
UNIT = ROOT / "systemd" / "edge-run.service"
STATION_SECTIONS = ("gpio", "http", "mqtt", "watchdog")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[gpio]\ntrigger_pin = 28\n",
            "gpio.trigger_pin: expected a BCM GPIO number 0..27 or a gpiozero pin name",
        ),
        ("[gpio]\nreject_pin = 'PIN7'\n", "gpio.reject_pin: expected a BCM GPIO number"),
        ("[gpio]\nok_pin = true\n", "gpio.ok_pin: expected a whole number or a non-empty string, got True"),
        ("[gpio]\nbusy_pin = 'BOARD41'\n", "gpio.busy_pin: expected a BCM GPIO number"),
        ("[gpio]\nbusy_pin = 'BOARD6'\n", "(physical pin 6 is a power or ground pin, not a GPIO)"),
        (  # the same line by its physical pin and its BCM number
            "[gpio]\nok_pin = 'BOARD11'\nmissing_pin = 17\n",
            "gpio.missing_pin: expected a pin of its own, got 17 (also gpio.ok_pin)",
        ),
        ("[gpio]\npull = 'sideways'\n", "gpio.pull: expected one of 'up', 'down', 'none'"),
        ("[gpio]\nactive = 1\n", "gpio.active: expected a non-empty string, got 1"),
        ("[gpio]\ndebounce_s = -0.1\n", "gpio.debounce_s: expected seconds >= 0 and at most 86400"),
        ("[gpio]\nwindow_s = 0\n", "gpio.window_s: expected seconds > 0 and at most 86400"),
        # (a longer wait overflows Python's timers: the GPIO timer thread died, the stop hung)
        (
            "[gpio]\nlight_hold_s = 1e10\n",
            "gpio.light_hold_s: expected seconds >= 0 and at most 86400 (a day)",
        ),
        ("[gpio]\nreject_delay_s = 1e10\n", "gpio.reject_delay_s: expected seconds >= 0 and at most 86400"),
        ("[mqtt]\nflush_s = 1e10\n", "mqtt.flush_s: expected seconds >= 0 and at most 86400"),
        ("[mqtt]\nreconnect_max_s = 1e-9\n", "mqtt.reconnect_max_s: expected seconds >= 0.5"),
        (
            "[mqtt]\nkeepalive_s = 100000\n",
            "mqtt.keepalive_s: expected a whole number of seconds in 1..65535",
        ),
        (
            '[mqtt]\nclient_id = "line\\u0007"\n',  # (a struct.error killed the MQTT thread)
            "mqtt.client_id: expected printable text of at most 65535 bytes",
        ),
        ("[gpio]\nreject_pulse_s = 'long'\n", "gpio.reject_pulse_s: expected a number"),
        ("[gpio]\nreject_unjudged = 'no'\n", "gpio.reject_unjudged: expected true or false"),
        ("[source]\nkind = 'url'\nurl = '   '\n", "source.url: expected an address"),
        ("[gpio]\nok_pin = 5\nmissing_pin = 'GPIO5'\n", "gpio.missing_pin: expected a pin of its own"),
        ("[gpio]\nrejectpin = 27\n", "unknown key 'gpio.rejectpin'"),
        ("[trigger]\nkind = 'gpio'\n", "gpio.trigger_pin: expected a pin for trigger.kind = 'gpio'"),
        ("[http]\nlisten = 'localhost'\n", "http.listen: expected HOST:PORT, :PORT or PORT"),
        ("[http]\nlisten = ':99999'\n", "http.listen: expected HOST:PORT"),
        ("[http]\nlisten = 8080\n", "http.listen: expected a non-empty string, got 8080"),
        ("[http]\ntoken = 'short'\n", "http.token: expected at least 8 characters"),
        ("[http]\ntoken = 'abc;defgh'\n", "http.token: expected at least 8 characters, each a letter"),
        # the secret itself is never shown: its length and the characters that do not belong
        ("[http]\ntoken = 'Line1:stamp!2026'\n", "or one of . _ ~ -, got 16 characters, with '!' ':'"),
        ("[http]\nstream_fps = 0\n", "http.stream_fps: expected a number > 0"),
        ("[http]\njpeg_quality = 101\n", "http.jpeg_quality: expected a whole number in 10..100"),
        ("[mqtt]\nbroker = 'a:b:c'\n", "mqtt.broker: expected HOST or HOST:PORT"),
        ("[mqtt]\nbroker = 'broker'\n", "mqtt.broker: expected output.events too"),
        ("[mqtt]\nstation = 'line/1'\n", "mqtt.station: expected one MQTT topic level"),
        ("[mqtt]\nkeepalive_s = 0\n", "mqtt.keepalive_s: expected a whole number of seconds in 1..65535"),
        ("[watchdog]\ninference_timeout_s = 0\n", "watchdog.inference_timeout_s: expected seconds > 0"),
        ("[watchdog]\nstall = 3\n", "unknown key 'watchdog.stall'"),
    ],
)
def test_bad_station_configs_name_the_key(tmp_path: Path, toml: str, message: str):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config.load(path)


def test_good_station_config_and_flags_override_it(tmp_path: Path):
    path = tmp_path / "station.toml"
    path.write_text(
        "[trigger]\nkind = 'gpio'\n[gpio]\ntrigger_pin = 'BOARD11'\nreject_pin = 27\nreject_delay_s = 0.8\n"
        "[http]\nlisten = '0.0.0.0:8080'\ntoken = 'long-enough'\n"
        "[mqtt]\nbroker = 'broker.plant'\nstation = 'line-1'\n[output]\nevents = 'v.jsonl'\n"
    )
    config = Config.load(path)
    assert (config.trigger.kind, config.gpio.trigger_pin, config.gpio.reject_delay_s) == (
        "gpio",
        "BOARD11",
        0.8,
    )
    argv = ["--config", str(path), "--trigger", "gpio:22", "--reject-pin", "GPIO23", "--reject-delay", "0.4"]
    argv += ["--http", ":9000", "--mqtt", "10.0.0.5:1884", "--station", "line-2", "--reject-pulse", "0.2"]
    config = Config.load(path, overrides_from(build_parser().parse_args(argv)))
    g = config.gpio
    assert (g.trigger_pin, g.reject_pin, g.reject_delay_s, g.reject_pulse_s) == (22, "GPIO23", 0.4, 0.2)
    assert config.http.listen == ":9000" and config.http.token == "long-enough"
    assert (config.mqtt.broker, config.mqtt.station) == ("10.0.0.5:1884", "line-2")
    config = Config.load(path, overrides_from(build_parser().parse_args(["--trigger", "occupancy"])))
    assert config.trigger.kind == "occupancy" and config.gpio.trigger_pin == "BOARD11"


def test_the_example_config_documents_every_station_key():
    config = Config.load(EXAMPLE)
    assert config.http.listen is None and config.mqtt.broker is None and config.trigger.kind == "occupancy"
    text = EXAMPLE.read_text()
    for section in STATION_SECTIONS:
        assert f"[{section}]" in text
        for key in Config.__dataclass_fields__[section].default_factory.__dataclass_fields__:
            assert re.search(rf"^#? ?{key} = ", text, re.M), f"{section}.{key} is not documented"


def test_check_config_names_a_bad_station_key(tmp_path: Path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[gpio]\nreject_pin = 40\n")
    assert main(["--check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gpio.reject_pin: expected a BCM GPIO number 0..27" in err


def test_the_unit_grants_the_gpio_and_video_groups_and_their_devices_only():
    text = UNIT.read_text()
    assert re.findall(r"^SupplementaryGroups=(.*)$", text, re.M) == ["gpio video"]
    allowed = re.findall(r"^DeviceAllow=(\S+)", text, re.M)
    assert "char-gpiochip" in allowed and "char-video4linux" in allowed
    assert re.search(r"^DevicePolicy=closed$", text, re.M) and re.search(r"^NoNewPrivileges=yes$", text, re.M)


def _offline_security_supported() -> bool:
    if shutil.which("systemd-analyze") is None:
        return False
    help_text = subprocess.run(
        ["systemd-analyze", "security", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    return "--offline" in help_text


@pytest.mark.skipif(
    not _offline_security_supported(), reason="systemd-analyze security --offline not available"
)
def test_the_unit_sandboxing_exposure_is_at_most_3():
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for edge-run\.service: (\d+(?:\.\d+)?)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 3.0


def _doc_toml_blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, match in enumerate(re.finditer(r"```toml\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)):
            blocks.append((f"{doc.name}#{i + 1}", match.group(1)))
    return blocks


@pytest.mark.parametrize(("where", "text"), _doc_toml_blocks(), ids=[w for w, _ in _doc_toml_blocks()])
def test_every_config_example_in_the_docs_is_a_valid_config_on_its_own(where, text):
    import tomllib

    # a reader copies one block into a file: it must be a config edge-run accepts (files it names
    # are checked at the start, not here)
    data = tomllib.loads(text)
    config = Config.from_mapping(data, base=ROOT)
    for section, values in data.items():  # and it sets what it shows
        for key, value in values.items():
            got = getattr(getattr(config, section), key)
            if isinstance(value, list):
                got = list(got)
            elif isinstance(value, str) and isinstance(got, Path):
                value = (ROOT / value).expanduser()
            assert got == value, f"{where}: {section}.{key}"

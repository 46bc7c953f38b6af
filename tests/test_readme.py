"""The README's two commands stay true: CI runs the README's test command word for word."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _two_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, re.S)


def test_readme_shows_exactly_two_commands():
    commands = _two_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "edge-run --demo" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _two_commands()[1] in ci


def test_console_scripts_are_declared():
    text = (ROOT / "pyproject.toml").read_text()
    for name in ("edge-run", "edge-bench", "edge-train", "edge-convert", "edge-eval", "edge-synth"):
        assert re.search(rf"^{name} = ", text, re.M), name

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


def test_every_console_script_runs_its_own_tool(capsys):
    """Each script's launcher (pyproject's ``module:function``) hands its argv to its tool's main."""
    import importlib
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, function = target.split(":")
        launcher = getattr(importlib.import_module(module), function)
        try:
            status = launcher(["--no-such-flag"])
        except SystemExit as stopped:  # argparse's way
            status = stopped.code
        assert status == 2, name
        assert capsys.readouterr().err.startswith(f"{name}: error: "), name


def test_ctrl_c_while_a_tool_is_still_importing_ends_in_one_line(tmp_path: Path, monkeypatch, capsys):
    """Ctrl-C in a tool's first fifth of a second (Python importing its module) used to print a
    KeyboardInterrupt traceback: one line and status 130 now, as once its main runs."""
    from edge.cli import INTERRUPTED, launch

    (tmp_path / "tool_being_imported.py").write_text("raise KeyboardInterrupt  # Ctrl-C, mid-import\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert launch("tool_being_imported", "edge-run", []) == INTERRUPTED == 130
    assert capsys.readouterr().err == "edge-run: interrupted\n"


def test_every_option_of_every_tool_says_what_it_does():
    """--help is the station engineer's manual: every option has a help text, and no default is
    shown that means nothing (None, [], False)."""
    import importlib

    for module in (
        "edge.cli.run",
        "edge.cli.bench",
        "edge.cli.synth",
        "train.cli",
        "train.evaluate",
        "convert.cli",
    ):
        parser = importlib.import_module(module).build_parser()
        bare = [a.option_strings or [a.dest] for a in parser._actions if not a.help]
        assert not bare, (module, bare)
        text = parser.format_help()
        assert not re.search(r"\(default: (None|\[\]|False)\)", text), (module, text)

"""Every option of every ``wharf`` command says what it does in ``--help``."""

from __future__ import annotations

from typing import Any

import typer.main

from wharf.cli.app import app


def _commands(group: Any, prefix: str) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if hasattr(command, "commands"):
            found += _commands(command, path)
        else:
            found.append((path, command))
    return found


def test_every_option_has_help_text() -> None:
    commands = _commands(typer.main.get_command(app), "wharf")
    assert len(commands) > 20
    missing = [
        f"{path} {param.opts[0]}"
        for path, command in commands
        for param in command.params
        if param.param_type_name == "option" and not (getattr(param, "help", "") or "").strip()
    ]
    assert missing == []

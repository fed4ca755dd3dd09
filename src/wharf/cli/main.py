"""The ``wharf`` command's entry point (``wharf = wharf.cli.main:main``).

``wharf serve ...`` is read by the serve command's own parser
(:func:`wharf.cli.serve.command.main`), so that starting the broker imports none of the other
commands (nor their HTTP client, nor typer); any other command line goes to the whole CLI,
:mod:`wharf.cli.app`.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        from wharf.cli.serve.command import main as serve

        serve(sys.argv[2:])
    else:
        from wharf.cli.app import app

        app()


if __name__ == "__main__":
    main()

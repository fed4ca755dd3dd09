"""The ``wharf`` command's entry point (``wharf = wharf.cli.main:main``).

``wharf serve ...`` is read by the serve command's own parser
(:func:`wharf.cli.serve.command.main`), so that starting the broker imports none of the other
commands (nor their HTTP client, nor typer); any other command line goes to the whole CLI,
:mod:`wharf.cli.app`.

A ``wharf serve`` process also makes ``hypothesis`` unimportable: kio imports it, when it is
installed, only to register test strategies for its types, which cost a broker's start-up some
100 ms in a test environment (docs/performance.md, "Start-up and idle memory") and which a
broker never uses. kio carries on without it, as where it is not installed.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        sys.modules.setdefault("hypothesis", None)  # type: ignore[arg-type]
        from wharf.cli.serve.command import main as serve

        serve(sys.argv[2:])
    else:
        from wharf.cli.app import app

        app()


if __name__ == "__main__":
    main()

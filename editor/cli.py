"""`edit`: the console script. `edit FILE INSTRUCTION` is sugar for `edit propose FILE INSTRUCTION`."""

from __future__ import annotations

import sys

from .commands import app
# Importing a command module registers its commands on `app`.
from .commands import apply, batch, bench, hooks, model, propose, recover, rules, serve, train  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    commands |= {g.name for g in app.registered_groups}
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        argv.insert(0, "propose")
    app(argv, prog_name="edit")


if __name__ == "__main__":
    main()

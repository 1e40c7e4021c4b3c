"""``bdt``: the operator's command line. One module per verb group; each verb is declared once
in ``shared.cli.verbs``' registry, and a verb that sends a bus op takes its arguments from the
op's declaration (shared.protocol)."""

from __future__ import annotations

import signal
import sys

from shared.bus.client import BusError
from shared.cli import (  # noqa: F401 - every module registers its verbs
    backtest,
    cache,
    config,
    dashboard,
    data,
    jobs,
    models,
    monitor,
    resources,
    status,
    trading,
)
from shared.cli.verbs import add_generic_verbs, build_parser
from shared.config import ConfigError, load_config
from shared.logs import EscapingWriter, setup_logging
from shared.protocol.tables import TABLES
from shared.resources.allocation import AllocationError

add_generic_verbs(list(TABLES.values()))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bdt``; exit 0 ok, 1 failed, 2 bad configuration or usage."""
    # `bdt status | head` must end quietly, as any command-line tool does
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # what bdt prints can hold text from outside (cache values, alerts, symbols from files):
    # no escape sequence reaches the terminal (shared/logs.py)
    if not isinstance(sys.stdout, EscapingWriter):
        sys.stdout, sys.stderr = EscapingWriter(sys.stdout), EscapingWriter(sys.stderr, True)
    # what the libraries log reaches the terminal escaped (shared/logs.py), as bare as before
    setup_logging("bdt", "WARNING", fmt="%(message)s", replace=False)
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config()
        return args.verb.run(cfg, args)
    except ConfigError as exc:
        print(f"bdt: configuration error: {exc}", file=sys.stderr)
        return 2
    except AllocationError as exc:
        print(f"bdt: allocation table error: {exc}", file=sys.stderr)
        return 2
    except BusError as exc:
        print(f"bdt: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""One line per event on stderr, with the component name; supervisord captures and rotates."""

from __future__ import annotations

import logging
import sys


def setup_logging(component: str, level: str = "INFO") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s " + component + " %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return logging.getLogger(f"bdt.{component}")

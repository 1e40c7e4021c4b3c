"""The systemd unit for supervisord, rendered from deploy/bitdaytrader.service.

``MemoryMax=`` and ``CPUQuota=`` are the allocation table's parent limits (an outer guard
around the tree and supervisord itself), so changing the table changes the unit. On the target
the release renders its own unit (``python -m deploy.unit --base BASE`` in the release): a
rollback brings back the unit of the release it returns to. The deploying machine renders the
same text to tell whether anything would change.
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path

from shared.resources.allocation import load_allocation

ROOT = Path(__file__).resolve().parents[1]


def render(base: str, root: Path = ROOT) -> str:
    """The unit for a stack installed in ``base``, from ``root``'s template and table."""
    parent = load_allocation(root / "cgroups" / "allocation.toml").parent
    quota = "" if parent.cpu_quota is None else f"{round(parent.cpu_quota * 100)}%"
    template = string.Template((root / "deploy" / "bitdaytrader.service").read_text())
    return template.substitute(base=base, memory_max=parent.memory_max, cpu_quota=quota)


def main() -> None:
    parser = argparse.ArgumentParser(description="print the systemd unit of this release")
    parser.add_argument("--base", required=True, help="where the stack is installed")
    print(render(parser.parse_args().base), end="")


if __name__ == "__main__":
    main()

"""Components whose real work lands in later issues still run as real processes on the bus:
they answer ``ping`` and ``status``, and ``status`` says plainly what they do not do yet."""

from __future__ import annotations

from typing import Any

from shared.bus.service import Service, run
from shared.protocol.ops import table


def skeleton(name: str, summary: str, not_yet: str) -> type[Service]:
    def service_status(self: Service) -> dict[str, Any]:
        return {"implemented": False, "not_yet": not_yet}

    return type(
        f"{name.title()}Skeleton",
        (Service,),
        {"name": name, "summary": summary, "ops": table(name),
         "service_status": service_status},
    )


def run_skeleton(name: str, summary: str, not_yet: str) -> None:
    run(skeleton(name, summary, not_yet))

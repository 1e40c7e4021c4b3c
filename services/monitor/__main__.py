"""monitor: the resource watchdog (services/monitor/service.py, docs/monitor.md)."""

from services.monitor.service import MonitorService
from shared.bus.service import run

if __name__ == "__main__":
    run(MonitorService)

"""history: rolling window of recent bars + durable market-data store (shared.history_service)."""

from services.history.service import HistoryService
from shared.bus.service import run

if __name__ == "__main__":
    run(HistoryService)

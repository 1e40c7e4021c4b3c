"""history: rolling window of recent bars + durable market-data store (shared.history_service)."""

from shared.history_service import HistoryService
from shared.service import run

if __name__ == "__main__":
    run(HistoryService)

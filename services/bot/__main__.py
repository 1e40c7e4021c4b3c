"""bot: market feed and bar publisher (shared.bot_service); strategy comes with its issue."""

from shared.bot_service import BotService
from shared.service import run

if __name__ == "__main__":
    run(BotService)

"""bot: market feed and bar publisher (shared.bot_service); strategy comes with its issue."""

from services.bot.service import BotService
from shared.bus.service import run

if __name__ == "__main__":
    run(BotService)

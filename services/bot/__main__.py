"""bot: market feed, bar building, strategy, risk, execution. Skeleton until the bot issue."""

from shared.skeleton import run_skeleton

if __name__ == "__main__":
    run_skeleton("bot", "market feed, bars, strategy, risk, paper/live execution",
                 "no feed, no strategy, no orders yet: only ping and status")

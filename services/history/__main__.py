"""history: rolling window of bars + durable market-data store. Skeleton until that issue."""

from shared.skeleton import run_skeleton

if __name__ == "__main__":
    run_skeleton("history", "rolling bar window and durable market-data store",
                 "stores no bars yet: only ping and status")

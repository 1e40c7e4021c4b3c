"""monitor: the resource watchdog. Skeleton: modes and alerts come with their issue."""

from shared.bus.skeleton import run_skeleton

if __name__ == "__main__":
    run_skeleton("monitor", "resource watchdog: slice usage, modes, alerts",
                 "publishes no mode changes or alerts yet: only ping and status")

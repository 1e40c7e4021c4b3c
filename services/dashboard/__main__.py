"""dashboard: on-demand UI. Skeleton: serves no pages yet."""

from shared.bus.skeleton import run_skeleton

if __name__ == "__main__":
    run_skeleton("dashboard", "on-demand dashboard", "serves no pages yet: only ping and status")

"""predictor: LightGBM + Ridge + GARCH ensemble. Skeleton until the market-data issue."""

from shared.skeleton import run_skeleton

if __name__ == "__main__":
    run_skeleton("predictor", "LightGBM + Ridge + GARCH predictions per closed bar",
                 "no model loaded and no predictions published yet: only ping and status")

"""predictor: LightGBM + Ridge + GARCH predictions per closed bar (shared.predictor_service)."""

from shared.predictor_service import PredictorService
from shared.service import run

if __name__ == "__main__":
    run(PredictorService)

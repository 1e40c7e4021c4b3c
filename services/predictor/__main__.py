"""predictor: LightGBM + Ridge + GARCH predictions per closed bar (shared.predictor_service)."""

from services.predictor.service import PredictorService
from shared.bus.service import run

if __name__ == "__main__":
    run(PredictorService)

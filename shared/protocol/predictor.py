"""The predictor service's ops."""

from __future__ import annotations

from shared.protocol.common import table
from shared.protocol.ops import Arg, Op

PREDICTION = "{symbol, bar_time, expected_return, p_up, volatility, model_version}"

OPS = table(
    "predictor",
    Op("predict", "the prediction for the last closed bar, or for a given feature vector",
       (Arg("features", list, "a feature vector in the model's feature order (JSON list)",
            None),),
       PREDICTION, verb="predict"),
    Op("reload", "load a model version now (default: the promoted one); the old one stays "
                 "loaded if the new one is unusable",
       (Arg("version", (str, type(None)), "the version to load", None),),
       "{ok, model_version, error}", verb="models reload"),
)

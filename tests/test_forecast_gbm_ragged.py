"""The global GBM on series that start at different times (network telemetry for two weeks, an
LLM service's load reports for one): rows from before a series started must not train the model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from collectors.synthetic import SyntheticTelemetry
from forecasting.registry import make_model


def test_a_series_that_starts_late_does_not_skew_the_others() -> None:
    network = SyntheticTelemetry(n_sources=4, periods=8 * 24, seed=7).frame()
    late = SyntheticTelemetry(n_sources=2, periods=8 * 24, seed=8, source_prefix="edge").frame() * 5000  # bytes, not Mbit/s
    late.iloc[:24] = np.nan  # reports began a day after the network's
    frame = pd.concat([network, late], axis=1)
    alone = make_model("gbm", pd.Timedelta(hours=1)).forecast_many(network, 24, 0.9)
    mixed = make_model("gbm", pd.Timedelta(hours=1)).forecast_many(frame, 24, 0.9)
    for cell in network.columns:
        scale = np.nanmax(network[cell].to_numpy())
        assert (mixed[cell].mean > 0).all()
        assert np.abs(mixed[cell].mean - alone[cell].mean).max() < 0.5 * scale

"""Forecasters in the scikit-learn spirit: parameters in ``__init__``, ``fit`` on history, ``predict``."""

from forecasting.base import Forecaster, PointForecast
from forecasting.naive import SeasonalNaive

__all__ = ["Forecaster", "PointForecast", "SeasonalNaive"]

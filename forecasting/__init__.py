"""Forecasters in the scikit-learn spirit: parameters in ``__init__``, ``fit`` on history, ``predict``.

The names below are imported on first use, not with the package: ``forecasting.registry`` (model
names for the CLI's options) and ``forecasting.history`` must not pull scipy and scikit-learn into
every ``nmt`` start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forecasting.base import Forecaster, PointForecast
    from forecasting.naive import SeasonalNaive

__all__ = ["Forecaster", "PointForecast", "SeasonalNaive"]

_LAZY = {"Forecaster": "forecasting.base", "PointForecast": "forecasting.base", "SeasonalNaive": "forecasting.naive"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""GET /api/compare: what a compare view needs of many runs, in one answer."""

from __future__ import annotations

from pydantic import BaseModel

from bnlab.core.schema.metrics import LayersPublic, MetricsPublic
from bnlab.core.schema.runs import RunPublic


class CompareRun(BaseModel):
    """One run: the bodies of GET /runs/{id}, /runs/{id}/metrics and /runs/{id}/layers."""

    run: RunPublic
    metrics: MetricsPublic
    metrics_raw_points: int  # the X-Raw-Points header of /metrics
    layers: LayersPublic


class ComparePublic(BaseModel):
    """The runs in the order asked (each id once)."""

    runs: list[CompareRun]

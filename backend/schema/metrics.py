"""Series schemas: columnar run metrics and per-layer statistics (DESIGN.md response shapes).

Columnar (`{"step": [...], "val_acc": [...]}`) because that is what Plotly draws from and it is
several times smaller than a list of points. Non-finite values are sent as null.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

Column = list[float | None]

# GET /api/runs/{id}/metrics: {"step": [...], "<key>": [...]}; the raw point count travels in the
# X-Raw-Points header so the body keeps the documented shape.
MetricsPublic = dict[str, Column]


class LayerSeries(BaseModel):
    """One BN layer's series; every list is aligned with `step`."""

    model_config = ConfigDict(extra="forbid")

    index: int
    name: str
    raw_points: int  # probe steps stored for this layer before downsampling
    step: list[int]
    train_mean: Column
    train_var: Column
    running_mean: Column
    running_var: Column
    eval_mean: Column
    eval_var: Column
    shift: Column
    grad_norm: Column


class LayersPublic(BaseModel):
    """GET /api/runs/{id}/layers."""

    layers: list[LayerSeries]
    raw_points: int  # probe steps stored (per layer) before downsampling

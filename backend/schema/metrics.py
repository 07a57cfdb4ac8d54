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
    """One BN layer's series; every list is aligned with `step` (only the `?keys=` asked for)."""

    model_config = ConfigDict(extra="forbid")

    index: int
    name: str
    raw_points: int  # probe steps stored for this layer before downsampling
    step: list[int]
    train_mean: Column | None = None
    train_var: Column | None = None
    running_mean: Column | None = None
    running_var: Column | None = None
    eval_mean: Column | None = None
    eval_var: Column | None = None
    shift: Column | None = None
    grad_norm: Column | None = None


class LayersPublic(BaseModel):
    """GET /api/runs/{id}/layers."""

    layers: list[LayerSeries]
    raw_points: int  # probe steps stored (per layer) before downsampling

"""Series schemas: columnar run metrics and per-layer statistics (docs/design.md response shapes).

Columnar (`{"step": [...], "val_acc": [...]}`) because that is what Plotly draws from and it is
several times smaller than a list of points. Non-finite values are sent as null.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, create_model

from bnlab.core.registry import LAYER_KEYS

Column = list[float | None]

# GET /api/runs/{id}/metrics: {"step": [...], "<key>": [...]}; the raw point count travels in the
# X-Raw-Points header so the body keeps the documented shape.
MetricsPublic = dict[str, Column]


class _LayerSeriesBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    name: str
    raw_points: int  # probe steps stored for this layer before downsampling
    step: list[int]


# One optional column per registry LAYER_KEYS entry, so a new key needs no edit here.
LayerSeries = create_model(
    "LayerSeries",
    __doc__=(
        "One BN layer's series; every list is aligned with `step` (only the `?keys=` asked for)."
    ),
    __base__=_LayerSeriesBase,
    __module__=__name__,
    **{key: (Column | None, None) for key in LAYER_KEYS},
)


class LayersPublic(BaseModel):
    """GET /api/runs/{id}/layers."""

    layers: list[LayerSeries]
    raw_points: int  # probe steps stored (per layer) before downsampling

"""Series schemas: columnar run metrics and per-layer statistics (docs/design.md response shapes).

Columnar (`{"step": [...], "val_acc": [...]}`) because that is what Plotly draws from and it is
several times smaller than a list of points. Non-finite values are sent as null.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, create_model

from bnlab.core.registry import LAYER_KEYS

Column = list[float | None]

# The bounds of one read of per-layer series (GET /api/runs/{id}/layers and /api/compare), so one
# run with thousands of BN layers cannot make an answer of hundreds of MB (or minutes of work):
# at most MAX_LAYERS_PER_READ layers per run are read, and an answer holds at most
# MAX_LAYER_VALUES values (layers x points per layer x columns, `step` included), split evenly
# between the runs of a compare answer. Within that cap each layer is downsampled to the points
# that fit (never fewer than downsample.MIN_POINTS); layers that do not fit even then are left
# out of a default answer (it says `truncated`) and refused with a 422 when asked by `?layers=`.
MAX_LAYERS_PER_READ = 256
MAX_LAYER_VALUES = 1_000_000

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
    layers_total: int = Field(
        0, description="BN layers the run has stored points for (highest layer index + 1)"
    )
    truncated: bool = Field(
        False,
        description=(
            "true when layers were left out to keep the answer within its caps (at most "
            f"{MAX_LAYERS_PER_READ} layers, {MAX_LAYER_VALUES:,} values): the first ones are "
            "listed; ask for the others with ?layers="
        ),
    )
    max_points: int | None = Field(
        None,
        description=(
            "the points per layer this answer was bounded to: the asked max_points, or less "
            "where the answer's value cap required it (min/max buckets keep every extreme)"
        ),
    )

"""RunPublic: what the API shows for a run."""

from __future__ import annotations

from datetime import UTC, datetime

from backend.db.models import Run
from bnlab.core.schema.runs import RunPublic, finite_or_none


def test_finite_or_none_replaces_nan_and_inf_recursively():
    """NaN and ±inf become None at any depth; finite values and other types stay."""
    value = {"a": float("nan"), "b": [1.5, float("inf"), {"c": -float("inf")}], "d": "x", "e": 2}
    assert finite_or_none(value) == {"a": None, "b": [1.5, None, {"c": None}], "d": "x", "e": 2}


def test_run_public_sends_null_for_non_finite_summary():
    """A diverged run's NaN summary (possible on SQLite) is shown as null, not as invalid JSON."""
    run = Run(
        id=1,
        name="x",
        status="diverged",
        config={},
        tags=[],
        sweep_id=None,
        created_at=datetime.now(UTC),
        progress=float("nan"),
        step=0,
        attempt=1,
        cancel_requested=False,
        summary={"test_acc_eval": float("nan")},
    )
    public = RunPublic.model_validate(run)
    assert public.summary == {"test_acc_eval": None}
    assert public.progress == 0.0
    assert "NaN" not in public.model_dump_json()

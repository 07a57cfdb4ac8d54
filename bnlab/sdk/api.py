"""bnlab.Api: runs and their series from a bnlab server as pandas DataFrames (for notebooks).

    api = bnlab.Api("http://127.0.0.1:8000")
    runs = api.runs(tag="mine", status="succeeded")
    layers = api.layers(runs.id[0])      # one row per (layer, step)
    metrics = api.metrics(runs.id[0])    # one row per probe step

pandas comes with the `sdk` extra (pip install 'bnlab[sdk]'); it is imported on first use.
"""

from __future__ import annotations

import os
from typing import Any

from bnlab.sdk.transport import Client

PAGE = 500  # the API's largest page


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - the extra is installed in CI
        raise ImportError("bnlab.Api needs pandas: pip install 'bnlab[sdk]'") from exc
    return pandas


class Api:
    """Read access to a bnlab server (url / token default to BNLAB_URL / BNLAB_API_TOKEN)."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        url = url or os.environ.get("BNLAB_URL") or "http://127.0.0.1:8000"
        self.client = Client(url, token or os.environ.get("BNLAB_API_TOKEN"))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def _get(self, path: str, **params: Any) -> Any:
        return self.client.call(
            "GET", path, params={k: v for k, v in params.items() if v is not None}
        )

    def run(self, run_id: int) -> dict[str, Any]:
        """One run as the API returns it (config, status, kind, summary, ...)."""
        return self._get(f"/api/runs/{run_id}")

    def runs(
        self,
        *,
        tag: str | None = None,
        sweep: int | None = None,
        status: str | list[str] | None = None,
        text: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> Any:
        """Runs (newest first) as a DataFrame: one row per run, its fields plus `config.*` and
        scalar `summary.*` columns. kind: "script" (SDK runs) or "engine" (queued configs)."""
        pd = _pandas()
        if isinstance(status, list):
            status = ",".join(status)
        rows: list[dict[str, Any]] = []
        while limit is None or len(rows) < limit:
            page = self._get(
                "/api/runs",
                kind=kind,
                tag=tag,
                sweep=sweep,
                status=status,
                text=text,
                offset=len(rows),
                limit=PAGE,
            )
            data = page.get("data", [])
            rows += data
            if len(data) < PAGE or len(rows) >= page.get("count", 0):
                break
        rows = rows[:limit] if limit is not None else rows
        flat = []
        for r in rows:
            row = {k: v for k, v in r.items() if k not in ("config", "summary")}
            row.update(_flatten(r.get("config") or {}, "config."))
            row.update(
                {
                    k: v
                    for k, v in _flatten(r.get("summary") or {}, "summary.").items()
                    if not isinstance(v, (list, dict))
                }
            )
            flat.append(row)
        frame = pd.DataFrame(flat)
        for col in ("created_at", "started_at", "finished_at", "heartbeat_at", "enqueued_at"):
            if col in frame:
                frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
        return frame

    def metrics(self, run_id: int) -> Any:
        """Run-level series: one row per probe step, the fixed keys plus any metric the script
        logged under its own name (NaN where a step has no value)."""
        pd = _pandas()
        cols = self._get(f"/api/runs/{run_id}/metrics")
        frame = pd.DataFrame(cols).set_index("step")
        extra = self._get(f"/api/runs/{run_id}/extra-metrics").get("metrics", {})
        for key, series in extra.items():
            frame = frame.join(
                pd.Series(series["value"], index=series["step"], name=key, dtype="float64"),
                how="outer",
            )
        frame = frame.dropna(axis=1, how="all").astype("float64")
        frame.index.name = "step"
        return frame.reset_index()

    def layers(self, run_id: int) -> Any:
        """Per-BN-layer series, long: one row per (layer, step) with index, name and every
        statistic (train/eval/running mean and variance, shift, grad_norm)."""
        pd = _pandas()
        body = self._get(f"/api/runs/{run_id}/layers")
        frames = []
        for layer in body.get("layers", []):
            cols = {k: v for k, v in layer.items() if isinstance(v, list)}
            part = pd.DataFrame(cols)
            part.insert(0, "name", layer["name"])
            part.insert(0, "layer", layer["index"])
            frames.append(part)
        if not frames:
            return pd.DataFrame(columns=["layer", "name", "step"])
        out = pd.concat(frames, ignore_index=True)
        values = [c for c in out.columns if c not in ("layer", "name", "step")]
        out[values] = out[values].astype("float64")
        return out


def _flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out

"""Drift tests, torch-free part: every backend consumer and the dashboard agree with the registry.

The engine's side (loaders, dropout modules and their noise, the probe's keys) is in
tests/bnlab/engine/test_registry_engine.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
from sqlalchemy import inspect

from backend.db.models import LayerStat, Run, RunMetric
from bnlab.core import registry
from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.core.schema.params import DATASET_SHAPES
from bnlab.core.schema.runs import RunPublic

FRONTEND = Path(__file__).resolve().parents[3] / "frontend" / "js"


def _enum(schema: dict, *path: str) -> list[str]:
    """The `enum` of a field of the served JSON schema, following $refs."""
    defs, node = schema["$defs"], schema
    for key in path:
        node = node["properties"][key]
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
    if node.get("type") == "array":
        node = node["items"]
    return node["enum"]


@pytest.mark.parametrize(
    ("path", "names"),
    [
        (("dataset", "name"), registry.DATASET_NAMES),
        (("model", "dropout", "kind"), registry.DROPOUT_KIND_NAMES),
        (("model", "dropout", "mask"), registry.MASK_KINDS),
        (("model", "arch"), registry.ARCHS),
        (("model", "block"), registry.BLOCK_LAYERS),
        (("model", "activation"), registry.ACTIVATIONS),
        (("model", "pooling"), registry.POOLINGS),
        (("model", "batchnorm", "impl"), registry.BN_IMPLS),
        (("train", "optimizer"), registry.OPTIMIZERS),
    ],
)
def test_schema_offers_exactly_the_registry_names(path, names):
    """The served JSON schema (what the dashboard and clients see) lists the registry's names."""
    assert _enum(ExperimentConfig.model_json_schema(), *path) == list(names)


def test_run_status_is_the_registry_list():
    assert list(get_args(RunPublic.model_fields["status"].annotation)) == list(
        registry.RUN_STATUSES
    )
    assert set(registry.TERMINAL_STATUSES) < set(registry.RUN_STATUSES)
    assert Run.__table__.c.status.default.arg in registry.RUN_STATUSES


def test_parameter_estimate_knows_every_sized_dataset():
    sized = {n: (d.shape, d.classes) for n, d in registry.DATASETS.items() if d.shape}
    assert DATASET_SHAPES == sized
    # only the upload takes its shape from its file
    assert [n for n, d in registry.DATASETS.items() if d.shape is None] == ["upload"]


@pytest.mark.parametrize("name", registry.DATASET_NAMES)
def test_path_rule_follows_registry(name):
    """A dataset the registry says needs a path is refused without one, naming dataset.path."""
    extra = {"upload_id": "u"} if name == "upload" else {}
    if registry.DATASETS[name].needs_path:
        with pytest.raises(ValueError, match="dataset.path"):
            ExperimentConfig.model_validate({"dataset": {"name": name, **extra}})
    else:
        ExperimentConfig.model_validate({"dataset": {"name": name, **extra}})


def test_tables_have_a_column_per_key():
    """LayerStat / RunMetric value columns are exactly the registry's keys, in order."""
    layer = [c.key for c in inspect(LayerStat).columns if c.key not in ("run_id", "layer", "step")]
    metric = [c.key for c in inspect(RunMetric).columns if c.key not in ("run_id", "step")]
    assert layer == list(registry.LAYER_KEYS)
    assert metric == list(registry.METRIC_KEYS)


def test_layer_series_schema_has_every_layer_key():
    from bnlab.core.schema.metrics import LayerSeries

    fields = set(LayerSeries.model_fields) - {"index", "name", "raw_points", "step"}
    assert fields == set(registry.LAYER_KEYS)


def test_bn_keys_are_layer_keys():
    assert set(registry.BN_LAYER_KEYS) < set(registry.LAYER_KEYS)
    assert "grad_norm" not in registry.BN_LAYER_KEYS


@pytest.mark.parametrize("kind", registry.DROPOUT_KIND_NAMES)
def test_noise_moments_known_kinds(kind):
    mean, var = registry.noise_moments(kind, 0.3)
    assert mean == 1.0 and var > 0
    assert registry.noise_moments(kind, 0.0) == (1.0, 0.0)  # rate 0 is the identity


def test_unknown_dropout_kind_is_an_error_not_bernoulli():
    with pytest.raises(ValueError, match="model.dropout.kind"):
        registry.noise_moments("concrete", 0.3)
    with pytest.raises(ValueError, match="dataset.name"):
        registry.dataset("imagenet")


# ---------------------------------------------------------------- the dashboard's copies


def _js_strings(source: str, pattern: str) -> list[str]:
    match = re.search(pattern, source, re.S)
    assert match, pattern
    return re.findall(r'"([^"]+)"', match.group(1))


def test_dashboard_statuses_match_registry():
    """data/runs.js's filter list and terminal set are the registry's statuses."""
    runs_js = (FRONTEND / "data" / "runs.js").read_text()
    assert _js_strings(runs_js, r"const STATUSES = \[(.*?)\]") == list(registry.RUN_STATUSES)
    terminal = _js_strings(runs_js, r"const TERMINAL = new Set\(\[(.*?)\]\)")
    assert terminal == list(registry.TERMINAL_STATUSES)


def test_dashboard_series_keys_are_registry_keys():
    """Every per-layer key the dashboard asks for exists (each `const ...LAYER_KEYS = [...]`
    array in frontend/js), and the run page's layer CSV has a column for every key."""
    for path in sorted(FRONTEND.glob("**/*.js")):
        for match in re.finditer(r"const \w*LAYER_KEYS = \[(.*?)\]", path.read_text(), re.S):
            keys = re.findall(r'"([^"]+)"', match.group(1))  # names built from constants: skipped
            assert set(keys) <= set(registry.LAYER_KEYS), (path.name, keys)
    csv_js = (FRONTEND / "data" / "csv.js").read_text()
    csv_keys = _js_strings(csv_js, r"function layersCsv.*?const keys = \[(.*?)\]")
    assert csv_keys == list(registry.LAYER_KEYS)

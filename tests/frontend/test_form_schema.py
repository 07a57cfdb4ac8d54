"""The submit form is built from the served JSON schema: every select offers exactly the
registry's names (bnlab/core/registry.py), every config field is on the form, and the
defaults are the schema's (before, a hand copy lacked probe.recalibrate_samples and
probe.grad_noise)."""

from __future__ import annotations

import pytest
from dashboard_stack import start_stack

from bnlab.core import registry
from bnlab.core.schema.experiment import ExperimentConfig

SELECTS = {
    "dataset.name": registry.DATASET_NAMES,
    "model.arch": registry.ARCHS,
    "model.activation": registry.ACTIVATIONS,
    "model.pooling": registry.POOLINGS,
    "model.dropout.kind": registry.DROPOUT_KIND_NAMES,
    "model.dropout.mask": registry.MASK_KINDS,
    "model.batchnorm.impl": registry.BN_IMPLS,
    "train.optimizer": registry.OPTIMIZERS,
}


@pytest.fixture(scope="module")
def form_stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("dashboard-form"), workers=0)
    yield s
    s.stop()


@pytest.fixture
def form(form_stack, page):
    page.goto(form_stack.url + "/")
    page.wait_for_selector("table.runs")
    page.wait_for_function("document.querySelector('.table-status')?.textContent.trim()")
    if page.locator("form.submit-form").is_hidden():
        page.get_by_role("button", name="New experiment").click()
    page.wait_for_selector("form.submit-form[data-schema=ready]")
    return page


def _leaves(schema: dict, node: dict, prefix: str = "") -> list[str]:
    out = []
    for key, prop in node["properties"].items():
        path = f"{prefix}.{key}" if prefix else key
        ref = prop.get("$ref") or next(
            (n["$ref"] for n in prop.get("anyOf", []) if "$ref" in n), None
        )
        sub = schema["$defs"].get(ref.rsplit("/", 1)[1]) if ref else None
        out += _leaves(schema, sub, path) if sub and "properties" in sub else [path]
    return out


def test_selects_offer_the_registry_names(form):
    for path, names in SELECTS.items():
        options = form.eval_on_selector(
            f'select[name="{path}"]', "s => [...s.options].map(o => o.value)"
        )
        assert options == list(names), path
    block = form.eval_on_selector_all(
        "ol.block-order li .block-name", "ns => ns.map(n => n.textContent)"
    )
    assert block[1:] == [k for k in registry.BLOCK_LAYERS if k not in ("linear", "conv")]


def test_every_config_field_is_on_the_form(form):
    schema = ExperimentConfig.model_json_schema()
    on_form = set(
        form.eval_on_selector_all(
            "form.submit-form [data-path]", "ns => ns.map(n => n.dataset.path)"
        )
    )
    missing = [p for p in _leaves(schema, schema) if p not in on_form]
    assert not missing, f"fields.js lacks {missing}"


def test_form_starts_from_the_schema_defaults(form):
    defaults = ExperimentConfig().model_dump(mode="json")
    assert form.input_value('input[name="probe.recalibrate_samples"]') == str(
        defaults["probe"]["recalibrate_samples"]
    )
    assert form.is_checked('input[name="probe.grad_noise"]') is defaults["probe"]["grad_noise"]
    assert form.input_value('input[name="model.widths"]') == ", ".join(
        map(str, defaults["model"]["widths"])
    )
    assert (
        form.input_value('select[name="model.dropout.kind"]')
        == defaults["model"]["dropout"]["kind"]
    )
    assert form.input_value('input[name="train.batch_size"]') == str(
        defaults["train"]["batch_size"]
    )
    assert not form.errors, form.errors

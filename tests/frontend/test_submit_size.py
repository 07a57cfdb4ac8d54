"""The submit form shows the parameter count and BN-layer count of the model being edited
(POST /api/describe), and the server's reason when the model is invalid."""

from __future__ import annotations

from test_dashboard import open_form


def test_show_model_size_while_editing(stack, page):
    open_form(page, stack.url)
    size = page.locator("p.model-size")
    page.select_option('select[name="dataset.name"]', "cifar10")
    page.fill('input[name="dataset.path"]', "cifar10")
    page.select_option('select[name="model.arch"]', "wrn")
    page.fill('input[name="model.depth"]', "16")
    page.fill('input[name="model.widen"]', "2")
    page.select_option('select[name="model.dropout_at"]', "before_conv")
    config = {
        "dataset": {"name": "cifar10", "path": "cifar10"},
        "model": {"arch": "wrn", "depth": 16, "widen": 2, "dropout_at": "before_conv"},
    }
    with stack.client() as client:
        d = client.post("/api/describe", json=config).json()
    want = f"model: {d['params']:,} parameters, {len(d['bn_layers'])} BN layers"
    page.wait_for_function(
        "want => document.querySelector('p.model-size').textContent === want", arg=want
    )
    page.fill('input[name="model.depth"]', "17")  # not 6n+4: the server's reason, by field
    page.wait_for_function(
        "() => document.querySelector('p.model-size').textContent.includes('model.depth')"
    )
    assert "6n+4" in size.inner_text()
    assert not page.errors, page.errors

"""The broker client's transport options: Redis's visibility timeout is set explicitly."""

from __future__ import annotations

from backend.broker import make_celery
from backend.settings import Settings


def test_redis_visibility_timeout_comes_from_settings(tmp_path) -> None:
    """kombu's 1 h default would redeliver a longer run's unacknowledged message."""
    s = Settings(
        data_dir=tmp_path, BNLAB_BROKER_URL="redis://127.0.0.1:6379/3", visibility_timeout_s=1234.0
    )
    app = make_celery(s)
    assert app.conf.broker_transport_options["visibility_timeout"] == 1234.0
    assert Settings(data_dir=tmp_path).visibility_timeout_s > 24 * 3600


def test_filesystem_broker_keeps_its_folders(tmp_path) -> None:
    app = make_celery(Settings(data_dir=tmp_path))
    assert "visibility_timeout" not in app.conf.broker_transport_options
    assert app.conf.broker_transport_options["data_folder_in"].startswith(str(tmp_path))

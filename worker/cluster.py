"""What a worker on a host without the API's disk needs around one run: its inputs brought
from the artifact store (the checkpoint to resume from, an uploaded dataset), each epoch's
checkpoint sent back, and the export published before the run is recorded as succeeded.

With the embedded default (LocalStore on the data dir) every step here is a no-op: the files
already are where the store keeps them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from backend.artifacts import LocalStore, checkpoint_key, get_store, upload_key
from worker.db_sink import DbSink
from worker.device import current, describe

log = logging.getLogger(__name__)


def fetch_inputs(cfg: Any, run_id: int, paths: dict[str, Path]) -> None:
    """The run's latest checkpoint and its uploaded dataset, into this host's data dir."""
    store = get_store()
    if isinstance(store, LocalStore):
        return
    got = store.fetch(checkpoint_key(run_id))
    if got is not None:
        log.info("run %s: resuming from the object store's checkpoint", run_id)
    if getattr(cfg.dataset, "upload_id", None):
        if store.fetch(upload_key(cfg.dataset.upload_id)) is None:
            raise FileNotFoundError(
                f"uploaded dataset {cfg.dataset.upload_id} is not in the artifact store"
            )


def publish_exports(run_id: int, export_dir: Path) -> None:
    """Every file of the run's export folder, under exports/run-<id>/ in the store."""
    store = get_store()
    if isinstance(store, LocalStore) or not export_dir.is_dir():
        return
    for path in sorted(export_dir.iterdir()):
        if path.is_file():
            store.put(f"exports/run-{run_id}/{path.name}", path)


def drop_checkpoint(run_id: int, path: Path) -> None:
    """An ended run needs no checkpoint: here, nor in the store."""
    path.unlink(missing_ok=True)
    try:
        get_store().delete_prefix(checkpoint_key(run_id))
    except Exception:  # noqa: BLE001 - a leftover object costs space, not correctness
        log.warning("run %s: could not delete its stored checkpoint", run_id, exc_info=True)


class ClusterSink(DbSink):
    """DbSink that names the worker's device on the run and ships each epoch checkpoint."""

    def __init__(self, *, checkpoint_path: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_path = checkpoint_path
        self.store = get_store()

    def on_start(self, *, device: str, total_steps: int, layer_names: list[str]) -> None:
        info = current()
        if info["cuda_available"] and device != "cpu":
            device = describe(info)  # GPU name, driver and which GPU of the host
        super().on_start(device=device, total_steps=total_steps, layer_names=layer_names)

    def on_epoch_end(self, *, epoch: int, step: int) -> None:
        # Points first (the flush), then the checkpoint travels: a kill in between resumes
        # from the previous checkpoint and re-emits points that upsert onto the stored ones.
        super().on_epoch_end(epoch=epoch, step=step)
        if isinstance(self.store, LocalStore) or self.lost:
            return
        try:
            self.store.put(checkpoint_key(self.run_id), self.checkpoint_path)
        except Exception:  # noqa: BLE001 - the next epoch tries again; the run goes on
            log.warning("run %s: could not upload its checkpoint", self.run_id, exc_info=True)


def exit_stalled_process() -> None:
    """on_stall for the Celery task: the training thread is stuck, so nothing but ending the
    process frees this worker; its supervisor (bnlab worker, compose) starts a fresh one."""
    logging.shutdown()
    os._exit(75)

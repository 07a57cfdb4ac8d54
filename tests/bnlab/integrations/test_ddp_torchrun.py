"""Plain DDP under torchrun (issue 23 item 1): bnlab.init in every rank of a real 2-process job
on CPU (gloo) makes exactly one run, written by rank 0 (the other rank gets a RankRun); and a
model with SyncBatchNorm wrapped in DDP is probed on rank 0 alone, its train-mode passes and
PreciseBN recalibration included, without a collective the other rank never joins (SyncBN in
train mode all-reduces: on a GPU that would hang rank 0, on CPU torch refuses outright; the
probe runs each SyncBN as plain BN on rank 0's batch). Training SyncBN, and DDP around it, need
a GPU: here the SyncBN model is probed in the initialised job as built (not wrapped, not
trained)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.bnlab.integrations.itg import get, runs_named, sqlite_server
from tests.bnlab.sdk.servers import REPO
from tests.utils.net import free_port

SCRIPT = """
import os, sys, torch, torch.distributed as dist, torch.nn.functional as F
sys.path.insert(0, {repo!r})
torch.set_num_threads(1)
import bnlab
from torch.nn.parallel import DistributedDataParallel as DDP
from tests.bnlab.sdk.models import TinyResNet, cifar_like
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = DDP(TinyResNet())
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = cifar_like(16 * 20, seed=rank)  # each rank its own shard
with bnlab.init(name={name!r}, dir={dir!r} + f"/{{rank}}", total_steps=20, progress=False) as run:
    print(f"rank {{rank}}: {{type(run).__name__}} id={{run.id}}", flush=True)
    run.watch(model, held_out=cifar_like(32, seed=9), every=5)
    for k in range(20):
        loss = F.cross_entropy(model(x[16 * k:16 * k + 16]), y[16 * k:16 * k + 16])
        opt.zero_grad(); loss.backward(); opt.step()
        run.step(loss=loss.detach())
dist.barrier()
# DDP takes SyncBatchNorm on GPU modules only: on CPU the model itself, in the job
sync = torch.nn.SyncBatchNorm.convert_sync_batchnorm(TinyResNet())
run = bnlab.init(name={name!r} + "-syncbn", dir={dir!r} + f"/s{{rank}}", progress=False)
run.watch(sync, held_out=cifar_like(32, seed=9), every=2, train_mode_every=1, detect=False)
for k in range(4):
    run.step()
acc = run.evaluate(sync, cifar_like(64, seed=4), train_data=cifar_like(64, seed=5)[0])
run.finish(**({{"ranks": dist.get_world_size()}} if rank == 0 else {{}}))
dist.barrier()
dist.destroy_process_group()
print(f"rank {{rank}} done", flush=True)
"""


def test_two_ranks_make_one_run_and_syncbn_is_probed_on_rank_zero(tmp_path):
    name = f"ddp-{os.getpid()}"
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(repo=str(REPO), name=name, dir=str(tmp_path / "spool")))
    with sqlite_server(tmp_path / "server") as server:
        env = {**os.environ, "BNLAB_URL": server.url, "OMP_NUM_THREADS": "1"}
        env.pop("RANK", None)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node=2",
                "--master_addr=127.0.0.1",
                f"--master_port={free_port()}",
                str(script),
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        runs = runs_named(server, name)
        syncbn = runs_named(server, f"{name}-syncbn")
        layers = get(server, f"/api/runs/{syncbn[0]['id']}/metrics") if syncbn else None
    assert "rank 1: RankRun id=None" in done.stdout and "rank 1 done" in done.stdout
    assert len(runs) == 1, runs  # one run for the job, not one per rank
    (run,) = runs
    assert f"rank 0: Run id={run['id']}" in done.stdout
    assert run["status"] == "succeeded" and run["summary"]["steps"] == 20
    assert run["layer_names"][0] == "stem.1"  # the module inside DDP, named as the user's
    assert not list((tmp_path / "spool" / "1").glob("*.jsonl"))  # rank 1 spooled nothing
    assert len(syncbn) == 1 and syncbn[0]["status"] == "succeeded"
    summary = syncbn[0]["summary"]
    assert summary["ranks"] == 2
    assert summary["model"]["bn_layers"] == run["layer_names"]  # every SyncBatchNorm probed
    assert layers["step"] == [2, 4]
    assert all(v is not None for v in layers["val_acc_train_mode"])  # train-mode pass ran
    assert summary["test_acc_recalibrated"] is not None
    assert set(summary["test_acc_train_mode"]) == {"1", "8", "64"}

"""bayesbridge.parallel on a real LocalCluster with two worker processes."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayesbridge import parallel
from bayesbridge.errors import ClusterError, InputTypeError, InputValueError, TaskFailedError


@pytest.fixture(scope="module")
def client():
    with parallel.cluster(n_workers=2, memory_limit="1.5GiB", dashboard_address=None) as c:
        yield c


# Task functions live at module level so that worker processes can unpickle them.


def noisy_mean(mu: float, scale: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    draws = rng.normal(mu, scale, size=200)
    return {"mean": float(draws.mean()), "first": float(draws[0])}


def random_walk(drift: float, label: str, seed: int) -> xr.Dataset:
    steps = np.random.default_rng(seed).normal(drift, 1.0, size=12)
    return xr.Dataset({"walk": ("time", np.cumsum(steps)), "total": steps.sum()},
                      coords={"time": np.arange(12)})


def kill_worker_once(mu: float, scale: float, seed: int, marker: str, victim: float) -> dict:
    # First attempt of the victim task: the worker process dies without cleanup, as under the
    # OOM killer. Later attempts (the marker exists) compute normally.
    if mu == victim and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)
    return noisy_mean(mu, scale, seed)


def fail_once(mu: float, scale: float, seed: int, marker: str) -> dict:
    if mu == 1.0 and not Path(marker).exists():
        Path(marker).write_text("failed")
        raise RuntimeError("transient failure")
    return noisy_mean(mu, scale, seed)


def fail_on_two(mu: float, scale: float, seed: int) -> dict:
    if mu == 2.0:
        raise ValueError("mu=2 is unsupported")
    return noisy_mean(mu, scale, seed)


def thread_counts(i: int, seed: int) -> dict:
    import torch

    return {"omp": float(os.environ["OMP_NUM_THREADS"]),
            "openblas": float(os.environ["OPENBLAS_NUM_THREADS"]),
            "torch": float(torch.get_num_threads())}


PARAMS = [{"mu": float(m), "scale": 0.5 + 0.1 * m} for m in range(8)]


def test_task_seeds_follow_seedsequence_spawn():
    seeds = parallel.task_seeds(2024, 6)
    children = np.random.SeedSequence(2024).spawn(6)
    expected = [int(c.generate_state(1, np.uint64)[0]) >> 1 for c in children]
    assert seeds.tolist() == expected
    assert len(set(seeds.tolist())) == 6 and (seeds >= 0).all()
    # Prefix-stable: adding tasks does not change the seeds of existing ones.
    assert parallel.task_seeds(2024, 3).tolist() == expected[:3]
    with pytest.raises(InputValueError, match="seed"):
        parallel.task_seeds(-1, 3)


def test_cluster_equals_serial_and_direct_calls(client):
    seeds = parallel.task_seeds(7, len(PARAMS))
    par = parallel.map_tasks(noisy_mean, PARAMS, seed=7, client=client, progress=False)
    one = parallel.map_tasks(noisy_mean, PARAMS, seed=7, client=client, progress=False,
                             batch_size=1)
    ser = parallel.map_tasks(noisy_mean, PARAMS, seed=7, serial=True, progress=False)
    xr.testing.assert_identical(par, ser)
    xr.testing.assert_identical(one, ser)
    # Independent oracle: call the function directly with the documented seeds.
    direct = [noisy_mean(**p, seed=int(s))["mean"] for p, s in zip(PARAMS, seeds, strict=True)]
    np.testing.assert_array_equal(par["mean"].values, direct)
    np.testing.assert_array_equal(par["mu"].values, [p["mu"] for p in PARAMS])
    np.testing.assert_array_equal(par["seed"].values, seeds)
    assert par.attrs["root_seed"] == 7
    # A different root seed gives different draws.
    other = parallel.map_tasks(noisy_mean, PARAMS, seed=8, serial=True, progress=False)
    assert not np.array_equal(other["first"].values, ser["first"].values)


def test_dataset_results_from_dataframe_params(client):
    frame = pd.DataFrame({"drift": [0.0, 0.5, -1.0], "label": ["a", "b", "c"]})
    out = parallel.map_tasks(random_walk, frame, seed=3, client=client, dim="member",
                             progress=False)
    assert out["walk"].dims == ("member", "time") and out["walk"].shape == (3, 12)
    assert out["label"].values.tolist() == ["a", "b", "c"]
    seeds = parallel.task_seeds(3, 3)
    for i, row in frame.iterrows():
        ref = random_walk(row["drift"], row["label"], seed=int(seeds[i]))
        np.testing.assert_array_equal(out["walk"].isel(member=i).values, ref["walk"].values)
        assert float(out["total"][i]) == float(ref["total"])


def test_killed_worker_is_survived(client, tmp_path):
    marker = tmp_path / "killed"
    fn = functools.partial(kill_worker_once, marker=str(marker), victim=3.0)
    par = parallel.map_tasks(fn, PARAMS, seed=11, client=client, retries=2, batch_size=1,
                             progress=False)
    assert marker.exists(), "the victim task never ran its killing branch"
    killed_pid = int(marker.read_text())
    assert killed_pid not in client.run(os.getpid).values()  # that process is really gone
    ser = parallel.map_tasks(noisy_mean, PARAMS, seed=11, serial=True, progress=False)
    xr.testing.assert_identical(par, ser)
    assert par.sizes["task"] == len(PARAMS) and np.isfinite(par["mean"]).all()


def test_raising_task_is_retried(client, tmp_path):
    marker = tmp_path / "failed"
    fn = functools.partial(fail_once, marker=str(marker))
    par = parallel.map_tasks(fn, PARAMS, seed=5, client=client, retries=1, batch_size=1,
                             progress=False)
    assert marker.exists()
    ser = parallel.map_tasks(noisy_mean, PARAMS, seed=5, serial=True, progress=False)
    xr.testing.assert_identical(par, ser)


def test_failure_names_the_task_and_gathers_nothing(client):
    with pytest.raises(TaskFailedError, match=r"'mu': 2\.0") as info:
        parallel.map_tasks(fail_on_two, PARAMS, seed=1, client=client, retries=0, batch_size=1,
                           progress=False)
    assert info.value.task == 2 and info.value.params["mu"] == 2.0
    assert "mu=2 is unsupported" in str(info.value)
    assert info.value.seed == int(parallel.task_seeds(1, len(PARAMS))[2])
    with pytest.raises(TaskFailedError, match="task 2") as info:
        parallel.map_tasks(fail_on_two, PARAMS, seed=1, serial=True, progress=False)
    assert isinstance(info.value.__cause__, ValueError)


def test_existing_scheduler_by_address(client):
    address = client.scheduler.address
    par = parallel.map_tasks(noisy_mean, PARAMS[:3], seed=2, scheduler=address, progress=False)
    ser = parallel.map_tasks(noisy_mean, PARAMS[:3], seed=2, serial=True, progress=False)
    xr.testing.assert_identical(par, ser)


def test_unreachable_scheduler_raises_cluster_error():
    with pytest.raises(ClusterError, match="tcp://127.0.0.1:9"):
        with parallel.cluster("tcp://127.0.0.1:9", timeout=1):
            pass


def test_input_validation():
    with pytest.raises(InputValueError, match="empty"):
        parallel.map_tasks(noisy_mean, [], seed=0, serial=True)
    with pytest.raises(InputValueError, match="reserved"):
        parallel.map_tasks(noisy_mean, [{"mu": 0.0, "scale": 1.0, "seed": 3}], seed=0,
                           serial=True)
    with pytest.raises(InputValueError, match="same keyword"):
        parallel.map_tasks(noisy_mean, [{"mu": 0.0, "scale": 1.0}, {"mu": 1.0}], seed=0,
                           serial=True)
    with pytest.raises(InputTypeError, match="list of dicts"):
        parallel.map_tasks(noisy_mean, "mu", seed=0, serial=True)
    with pytest.raises(InputValueError, match="retries"):
        parallel.map_tasks(noisy_mean, PARAMS, seed=0, retries=-1, serial=True)
    with pytest.raises(InputValueError, match="seed"):
        parallel.map_tasks(noisy_mean, PARAMS, seed=1.5, serial=True)


def test_threads_are_pinned_per_task(client):
    # threads=2 differs from the cluster's start-up environment (1): the per-task pinning
    # sets it, and torch imported inside the task picks it up.
    two = parallel.map_tasks(thread_counts, [{"i": i} for i in range(2)], seed=0, client=client,
                             threads=2, batch_size=1, progress=False)
    assert (two["omp"] == 2).all() and (two["openblas"] == 2).all() and (two["torch"] == 2).all()
    # Back to one thread: torch is already loaded now, so torch.set_num_threads must act.
    one = parallel.map_tasks(thread_counts, [{"i": i} for i in range(4)], seed=0, client=client,
                             threads=1, batch_size=1, progress=False)
    assert (one["omp"] == 1).all() and (one["torch"] == 1).all()


def test_local_cluster_listens_on_loopback_only_and_serves_no_routes(client):
    # issue 17: nothing a command starts may answer from another host; worker memory and local
    # paths must not be readable over HTTP; scratch space lives in the package's cache folder
    import urllib.error
    import urllib.request

    import psutil

    me = psutil.Process()
    listening = [(p.pid, c.laddr.ip, c.laddr.port)
                 for p in [me, *me.children(recursive=True)]
                 for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 4  # scheduler comm + HTTP, nannies, workers
    assert all(ip == "127.0.0.1" for _, ip, _ in listening), listening
    scheduler = client.cluster.scheduler
    ports = [scheduler.http_server.port, *client.run(lambda dask_worker: dask_worker.http_server.port).values()]
    for port in ports:
        for route in ("info/main/workers.html", "metrics", "health", ""):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/{route}", timeout=5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sitemap.json", timeout=5) as page:
            assert page.read() == b'{"paths": ["/sitemap.json"]}'  # dask's own index, listing nothing else
    scratch = str(parallel.scratch_dir())
    assert all(d.startswith(scratch) for d in client.run(lambda dask_worker: dask_worker.local_directory).values())


def test_dashboard_addresses_are_bound_to_the_host():
    assert parallel._bound(":0", "127.0.0.1") == "127.0.0.1:0"
    assert parallel._bound(8787, "127.0.0.1") == "127.0.0.1:8787"
    assert parallel._bound("0.0.0.0:8787", "127.0.0.1") == "0.0.0.0:8787"  # an explicit choice is kept
    assert parallel._bound(None, "127.0.0.1") is None
    with pytest.raises(InputValueError, match="host"):
        with parallel.cluster(n_workers=1, host="tcp://0.0.0.0"):
            pass

"""Many independent tasks on dask.distributed: ensembles, sweeps and sensitivity samples.

A UQ study runs the same function many times with different parameters: assimilations of
idealized-model runs drawn from a parameter posterior, ensembles of the idealized model, the
model evaluations of a Sobol analysis. :func:`map_tasks` runs them as dask tasks on any
``distributed.Client`` (a :class:`distributed.LocalCluster` by default, or an existing cluster
given by its address or scheduler file, e.g. one started with dask-jobqueue on HPC) and gathers the
results into one xarray Dataset along a task dimension, with the task parameters as coordinates.

Reproducibility
---------------
Task ``i`` receives the seed

.. math:: s_i = \\lfloor \\mathrm{state}_{64}(\\mathrm{SeedSequence}(s).\\mathrm{spawn}(n)_i) / 2 \\rfloor
          \\in [0, 2^{63}),

a function of the root seed ``s`` and of ``i`` only (O'Neill 2015, the numpy ``SeedSequence``
construction that makes spawned streams statistically independent). Results are therefore identical
whatever the scheduling, batching, number of workers or retries, and identical to the serial path
(``serial=True``), provided the task function draws all its randomness from its ``seed`` argument.

Threads
-------
One task runs per worker process (``threads_per_worker=1``), and inside a task BLAS (OpenMP, MKL,
OpenBLAS), torch and — when installed — threadpoolctl-managed pools are limited to ``threads``
threads, so ``n_workers`` tasks never oversubscribe the cores. Local clusters get the
``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` environment at process start;
on an existing cluster the same variables are set before each task (they take effect for
libraries the task imports) and ``torch.set_num_threads`` is applied when torch is loaded.

Network and scratch space
-------------------------
A local cluster is closed by default: its scheduler, nannies and workers listen on
``127.0.0.1`` only (comms and HTTP endpoints alike), the HTTP endpoints serve no route unless a
dashboard is asked for (no worker memory or local paths to read), and worker scratch space
(spilled data) lives in ``$BAYESBRIDGE_CACHE_DIR/dask-scratch`` (the package's cache folder,
see :func:`scratch_dir`) instead of the shared temporary directory. ``host=`` opens it to
other machines explicitly.

Failures
--------
``retries`` re-runs a task whose function raised. A task whose worker process died (killed by the
OS, out of memory, ``os._exit``) is rescheduled on another worker by the scheduler itself, up to
``distributed.scheduler.allowed-failures`` times (default 3). Results are never half-gathered: if
a task still fails, the outstanding tasks are cancelled and :class:`~bayesbridge.errors.TaskFailedError`
names the failing task's index, parameters and seed.

References
----------
M. E. O'Neill (2015), PCG: a family of simple fast space-efficient statistically good algorithms
for random number generation, HMC-CS-2014-0905; numpy ``SeedSequence`` documentation.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayesbridge.errors import (
    ClusterError,
    InputTypeError,
    InputValueError,
    TaskFailedError,
    check_int,
)

__all__ = ["map_tasks", "cluster", "task_seeds", "default_n_workers", "thread_env", "scratch_dir", "LOOPBACK"]

LOOPBACK = "127.0.0.1"
"""Where a local cluster listens unless told otherwise."""

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_RESERVED_COORDS = ("seed",)


# ----------------------------------------------------------------------------- seeds and threads


def task_seeds(seed: int | np.random.SeedSequence, n: int) -> np.ndarray:
    """One independent seed per task, spawned from a root seed.

    Parameters
    ----------
    seed : int or numpy.random.SeedSequence
        Root seed (a non-negative integer).
    n : int
        Number of tasks.

    Returns
    -------
    ndarray of int64, shape (n,)
        ``seeds[i]`` in ``[0, 2**63)``: the first 64-bit word of ``SeedSequence(seed).spawn(n)[i]``
        shifted right by one bit, usable by ``numpy.random.default_rng`` and
        ``torch.Generator.manual_seed``. Depends only on ``seed`` and ``i``.
    """
    root = _root_sequence(seed)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise InputValueError(f"n must be a non-negative integer number of tasks; received {n!r}.")
    words = [child.generate_state(1, np.uint64)[0] >> np.uint64(1) for child in root.spawn(int(n))]
    return np.asarray(words, dtype=np.int64).reshape(int(n))


def _root_sequence(seed: int | np.random.SeedSequence) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        # Copy so that spawning does not advance the caller's sequence between calls.
        return np.random.SeedSequence(seed.entropy, spawn_key=seed.spawn_key,
                                      pool_size=seed.pool_size)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputValueError(
            f"seed must be a non-negative integer (or numpy.random.SeedSequence); received "
            f"{seed!r}. Pass e.g. seed=0; every task gets its own seed spawned from it.")
    return np.random.SeedSequence(int(seed))


def default_n_workers() -> int:
    """Number of worker processes of the default local cluster: the usable CPU cores.

    Respects CPU affinity and cgroup quotas (``dask.system.CPU_COUNT``).
    """
    from dask.system import CPU_COUNT

    return max(1, int(CPU_COUNT))


def thread_env(threads: int = 1) -> dict[str, str]:
    """Environment variables that cap BLAS/OpenMP thread pools at ``threads`` per process."""
    return {name: str(int(threads)) for name in _THREAD_VARS}


def _pin_threads(threads: int) -> None:
    """Cap thread pools inside a worker process (called before every task on a cluster)."""
    os.environ.update(thread_env(threads))
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _blas_limits(threads: int) -> contextlib.AbstractContextManager:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: environment variables and torch cover the common cases
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class _Task:
    index: int
    params: dict[str, Any]
    seed: int


class _WorkerTaskError(Exception):
    """Raised on a worker: carries the failing task's index and the formatted original error."""

    def __init__(self, index: int, error: str, trace: str) -> None:
        super().__init__(index, error, trace)
        self.index, self.error, self.trace = index, error, trace


def _normalise(result: Any, index: int) -> xr.Dataset | dict[str, Any]:
    """Turn one task's return value into a Dataset or a dict of scalars (cheap to stack)."""
    if isinstance(result, xr.Dataset):
        return result
    if isinstance(result, xr.DataArray):
        return result.to_dataset(name=result.name if result.name is not None else "value")
    if isinstance(result, numbers.Number | np.generic) and np.ndim(result) == 0:
        return {"value": result}
    if isinstance(result, Mapping):
        out: dict[str, Any] = {}
        for key, value in result.items():
            if isinstance(value, xr.DataArray):
                return xr.Dataset(dict(result))
            if not (isinstance(value, numbers.Number | np.generic | str) and np.ndim(value) == 0):
                raise InputTypeError(
                    f"task {index} returned a dict whose value {key!r} is a "
                    f"{type(value).__name__}; expected numbers (or xarray.DataArray values). "
                    "Return an xarray.Dataset for array-valued results.")
            out[str(key)] = value
        return out
    raise InputTypeError(
        f"task {index} returned a {type(result).__name__}; expected an xarray.Dataset, "
        "xarray.DataArray, a number or a dict of numbers.")


def _run_batch(fn: Callable[..., Any], tasks: list[_Task], threads: int | None) -> list:
    """Run tasks one after another in this process; what a dask task executes."""
    if threads is not None:
        _pin_threads(threads)
    out = []
    with _blas_limits(threads) if threads is not None else contextlib.nullcontext():
        for task in tasks:
            try:
                out.append((task.index, _normalise(fn(**task.params, seed=task.seed), task.index)))
            except Exception as exc:
                raise _WorkerTaskError(task.index, repr(exc), traceback.format_exc()) from exc
    if threads is not None:
        _pin_threads(threads)  # torch may have been imported by the task: cap it for the next
    return out


# ----------------------------------------------------------------------------- clusters


def scratch_dir() -> Path:
    """Scratch folder of local dask workers: ``dask-scratch`` in the package's cache folder.

    The cache folder is ``$BAYESBRIDGE_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/bayesbridge``, else ``~/.cache/bayesbridge`` (the rule of
    :func:`bayesbridge.datasets.twin.default_cache_dir`). Not created here.
    """
    env = os.environ.get("BAYESBRIDGE_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bayesbridge"
    return base / "dask-scratch"


def _bound(address: str | int | None, host: str) -> str | None:
    """A dashboard address with ``host`` where it names none (``":0"`` -> ``"127.0.0.1:0"``)."""
    if address is None:
        return None
    text = str(address)
    if "://" in text or not text.startswith(":") and ":" in text:
        return text
    return f"{host}:{text.lstrip(':') or 0}"



@contextlib.contextmanager
def cluster(scheduler: str | os.PathLike | None = None, n_workers: int | None = None, *,
            threads: int = 1, memory_limit: str | float | None = "auto",
            dashboard_address: str | None = ":0", timeout: float | None = None,
            host: str = LOOPBACK, local_directory: str | os.PathLike | None = None,
            **cluster_kwargs: Any) -> Iterator[Any]:
    """A ``distributed.Client``: connect to a scheduler, or start a local cluster of processes.

    Parameters
    ----------
    scheduler : str or path-like, optional
        Address of a running scheduler (``"tcp://host:8786"``) or the path of a scheduler file
        (``*.json``, written by ``dask scheduler --scheduler-file`` or dask-jobqueue/dask-mpi).
        Omitted: start a :class:`distributed.LocalCluster`.
    n_workers : int, optional
        Worker processes of the local cluster (default: :func:`default_n_workers`).
    threads : int
        BLAS/OpenMP threads per worker process of the local cluster (one task per process).
    memory_limit : str or float, optional
        Memory limit per local worker (``"auto"``: the machine's memory split between workers).
    dashboard_address : str, optional
        Where the local cluster serves its dashboard (``":0"``: a free port on ``host``;
        ``None``: no dashboard, and the scheduler's HTTP server, which dask always starts, on a
        free port of ``host`` serving no route).
    timeout : float, optional
        Seconds to wait for the scheduler (default: dask's ``distributed.comm.timeouts.connect``).
    host : str
        Interface every component of the local cluster listens on (default ``"127.0.0.1"``:
        reachable from this machine only). Pass e.g. ``"0.0.0.0"`` or a public address only to
        let workers on other machines join.
    local_directory : str or path-like, optional
        Scratch folder of the workers (default :func:`scratch_dir`, created with mode 0700).
    **cluster_kwargs
        Passed to :class:`distributed.LocalCluster`.

    Yields
    ------
    distributed.Client
        Closed on exit, together with the local cluster when one was started here; a remote
        cluster is left running.

    Notes
    -----
    Worker processes are spawned, so scripts that start a local cluster need the usual
    ``if __name__ == "__main__":`` guard.
    """
    import dask
    from distributed import Client, LocalCluster

    check_int(threads, "threads", minimum=1)
    if scheduler is not None:
        if n_workers is not None or cluster_kwargs:
            raise InputValueError(
                "n_workers and cluster options apply to a local cluster only; received them with "
                f"scheduler={str(scheduler)!r}. Size the remote cluster where it is started.")
        target = os.fspath(scheduler)
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        is_file = target.endswith(".json") or Path(target).is_file()
        try:
            client = (Client(scheduler_file=target, **kwargs) if is_file
                      else Client(target, **kwargs))
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(
                f"scheduler={target!r}: could not connect to a dask scheduler ({exc!r}). Expected "
                "a reachable address such as 'tcp://host:8786' or an existing scheduler file; "
                "check that the scheduler is running, or omit scheduler to use a local cluster."
            ) from exc
        try:
            yield client
        finally:
            client.close()
        return

    n = default_n_workers() if n_workers is None else check_int(n_workers, "n_workers", minimum=1)
    if not isinstance(host, str) or not host or "://" in host:
        raise InputValueError(f"host: expected an interface address such as '127.0.0.1', got {host!r}.")
    dashboard_address = _bound(dashboard_address, host)
    if dashboard_address is None:
        # The scheduler serves HTTP even without a dashboard (on :8787 of every interface unless
        # told otherwise): a free port of `host`, with no route (see the settings below).
        cluster_kwargs["scheduler_kwargs"] = {"dashboard_address": f"{host}:0",
                                              **cluster_kwargs.get("scheduler_kwargs", {})}
    scratch = Path(local_directory) if local_directory is not None else scratch_dir()
    try:
        scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ClusterError(f"local_directory: cannot create the workers' scratch folder {str(scratch)!r} "
                           f"({exc.strerror or exc}); set BAYESBRIDGE_CACHE_DIR or pass local_directory.") from exc
    settings: dict[str, Any] = {"temporary-directory": str(scratch), "distributed.worker.http.routes": []}
    if dashboard_address is None:
        settings["distributed.scheduler.http.routes"] = []
    with dask.config.set(settings):
        try:
            local = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host=host,
                                 protocol="tcp://", memory_limit=memory_limit,
                                 dashboard_address=dashboard_address, worker_dashboard_address=None,
                                 local_directory=str(scratch), env=thread_env(threads), **cluster_kwargs)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"could not start a local dask cluster with n_workers={n} on {host} ({exc!r}); "
                               "try fewer workers or pass scheduler=ADDRESS.") from exc
        try:
            client = Client(local)
            try:
                yield client
            finally:
                client.close()
        finally:
            local.close()


# ----------------------------------------------------------------------------- map_tasks


def map_tasks(fn: Callable[..., Any], params: Sequence[Mapping[str, Any]] | pd.DataFrame, *,
              seed: int | np.random.SeedSequence, client: Any = None,
              scheduler: str | os.PathLike | None = None, dim: str = "task", retries: int = 2,
              progress: bool = True, serial: bool = False, batch_size: int | None = None,
              threads: int = 1, join: str = "outer", desc: str | None = None) -> xr.Dataset:
    """Run ``fn(**params[i], seed=seeds[i])`` for every task and gather one Dataset.

    Parameters
    ----------
    fn : callable
        Module-level function (picklable) returning an ``xarray.Dataset``, an
        ``xarray.DataArray`` (variable named after it, or ``"value"``), a number (variable
        ``"value"``) or a dict of numbers (one scalar variable per key). It must take all its
        randomness from the integer ``seed`` keyword.
    params : list of dict or pandas.DataFrame
        One entry (row) per task; keys (columns) are ``fn``'s keyword arguments and must be the
        same for every task. ``seed`` is reserved.
    seed : int or numpy.random.SeedSequence
        Root seed; task ``i`` gets ``task_seeds(seed, n)[i]`` (see the module notes).
    client : distributed.Client, optional
        Cluster to run on. Default: connect to ``scheduler`` or start a local cluster for this
        call (see :func:`cluster`; reuse one with ``with cluster() as client`` for many calls).
    scheduler : str or path-like, optional
        Scheduler address or scheduler file when no ``client`` is given.
    dim : str
        Name of the task dimension of the result.
    retries : int
        Times a task whose function raised is re-run before the call fails (worker deaths are
        rescheduled by the scheduler independently, see the module notes).
    progress : bool
        Show a tqdm progress bar of completed tasks.
    serial : bool
        Run in this process, in order, without dask (the reference path; same seeds and result).
    batch_size : int, optional
        Tasks per dask task. Default: ``max(1, n // (8 * workers))`` so that thousands of cheap
        evaluations do not drown in scheduling overhead. Does not change the results.
    threads : int
        BLAS/OpenMP/torch threads per task on the workers.
    join : {"outer", "exact", "inner", "left", "right"}
        How differing coordinates of Dataset results are aligned when concatenated
        (``"outer"`` pads ragged results, e.g. runs of different length, with NaN).
    desc : str, optional
        Progress-bar label.

    Returns
    -------
    xarray.Dataset
        Task results concatenated along ``dim`` (coordinate: task index ``0..n-1``), with the
        scalar task parameters and ``seed`` as coordinates on ``dim``, and the root seed in
        ``attrs["root_seed"]`` when it is an integer.

    Raises
    ------
    TaskFailedError
        A task failed after its retries; names its index, parameters and seed.
    """
    if not callable(fn):
        raise InputTypeError(f"fn must be callable; received a {type(fn).__name__}.")
    tasks_params = _as_param_list(params)
    if not isinstance(dim, str) or not dim:
        raise InputValueError(f"dim must be a non-empty string; received {dim!r}.")
    clash = {dim, *_RESERVED_COORDS} & set(tasks_params[0])
    if clash:
        raise InputValueError(
            f"params: the names {sorted(clash)} are reserved (the task dimension {dim!r} and the "
            "per-task seed); rename those parameters.")
    check_int(retries, "retries", minimum=0)
    check_int(threads, "threads", minimum=1)
    valid_joins = ("outer", "exact", "inner", "left", "right")
    if join not in valid_joins:
        raise InputValueError(f"join must be one of {valid_joins}; received {join!r}.")
    if batch_size is not None:
        check_int(batch_size, "batch_size", minimum=1)

    seeds = task_seeds(seed, len(tasks_params))
    tasks = [_Task(i, p, int(s)) for i, (p, s) in enumerate(zip(tasks_params, seeds, strict=True))]

    if serial:
        results = _run_serial(fn, tasks, progress, desc)
    elif client is not None:
        results = _run_distributed(fn, tasks, client, retries, progress, batch_size, threads, desc)
    else:
        with cluster(scheduler) as own:
            results = _run_distributed(fn, tasks, own, retries, progress, batch_size, threads, desc)

    out = _assemble(results, tasks, dim, join)
    if isinstance(seed, numbers.Integral):
        out.attrs["root_seed"] = int(seed)
    return out


def _as_param_list(params: Any) -> list[dict[str, Any]]:
    if isinstance(params, pd.DataFrame):
        records = [{str(k): _unbox(v) for k, v in row.items()}
                   for row in params.to_dict(orient="records")]
    elif isinstance(params, Sequence) and not isinstance(params, str | bytes):
        records = []
        for i, p in enumerate(params):
            if not isinstance(p, Mapping):
                raise InputTypeError(f"params[{i}] must be a dict of keyword arguments; received "
                                     f"a {type(p).__name__}.")
            records.append(dict(p))
    else:
        raise InputTypeError("params must be a list of dicts or a pandas.DataFrame; received a "
                             f"{type(params).__name__}.")
    if not records:
        raise InputValueError("params is empty; expected at least one task.")
    keys = list(records[0])
    for i, p in enumerate(records):
        if set(p) != set(keys):
            raise InputValueError(
                f"params[{i}] has keys {sorted(p)} but params[0] has {sorted(keys)}; every task "
                "must take the same keyword arguments.")
    return records


def _unbox(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _describe(task: _Task) -> str:
    return f"task {task.index} (parameters {task.params}, seed {task.seed})"


def _run_serial(fn, tasks: list[_Task], progress: bool, desc: str | None) -> list:
    from tqdm.auto import tqdm

    results: list = [None] * len(tasks)
    with tqdm(total=len(tasks), disable=not progress, desc=desc, unit="task") as bar:
        for task in tasks:
            try:
                results[task.index] = _normalise(fn(**task.params, seed=task.seed), task.index)
            except Exception as exc:
                raise TaskFailedError(f"{_describe(task)} failed: {exc!r}", task.index,
                                      task.params, task.seed) from exc
            bar.update(1)
    return results


def _run_distributed(fn, tasks: list[_Task], client, retries: int, progress: bool,
                     batch_size: int | None, threads: int, desc: str | None) -> list:
    from distributed import as_completed
    from tqdm.auto import tqdm

    if batch_size is None:
        slots = max(1, sum(client.nthreads().values()))
        batch_size = max(1, len(tasks) // (8 * slots))
    batches = [tasks[i:i + batch_size] for i in range(0, len(tasks), batch_size)]
    token = uuid.uuid4().hex[:12]
    name = getattr(fn, "__name__", "task")
    futures = {
        client.submit(_run_batch, fn, batch, threads, key=f"bayesbridge-{name}-{token}-{b}",
                      retries=retries, pure=False): batch
        for b, batch in enumerate(batches)
    }
    results: list = [None] * len(tasks)
    try:
        with tqdm(total=len(tasks), disable=not progress, desc=desc, unit="task") as bar:
            for future in as_completed(futures):
                batch = futures[future]
                if future.status != "finished":
                    raise _failure(future, batch, retries)
                for index, value in future.result():
                    results[index] = value
                future.release()
                bar.update(len(batch))
    finally:
        pending = [f for f in futures if f.status == "pending"]
        if pending:  # never leave work running behind a failure or an interrupt
            client.cancel(pending)
    return results


def _failure(future, batch: list[_Task], retries: int) -> TaskFailedError:
    try:
        exc = future.exception()
    except Exception as cancelled:  # CancelledError: the cluster went away
        exc = cancelled
    if isinstance(exc, _WorkerTaskError):
        task = next(t for t in batch if t.index == exc.index)
        return TaskFailedError(
            f"{_describe(task)} failed after {retries} retries: {exc.error}\n"
            f"worker traceback:\n{exc.trace}", task.index, task.params, task.seed)
    # The worker died repeatedly (KilledWorker) or the task was cancelled: name the whole batch.
    task = batch[0]
    what = _describe(task) if len(batch) == 1 else (
        f"tasks {batch[0].index}..{batch[-1].index} (first: parameters {task.params}, "
        f"seed {task.seed})")
    return TaskFailedError(
        f"{what} failed: {exc!r}. A worker process running it died repeatedly (out of memory, "
        "killed) or the cluster shut down; raise the workers' memory_limit or check the task.",
        task.index, task.params, task.seed)


# ----------------------------------------------------------------------------- gathering


def _assemble(results: list, tasks: list[_Task], dim: str, join: str) -> xr.Dataset:
    n = len(tasks)
    if all(isinstance(r, dict) for r in results):
        keys = list(results[0])
        for i, r in enumerate(results):
            if list(r) != keys:
                raise InputValueError(
                    f"task {i} returned the keys {list(r)} but task 0 returned {keys}; every task "
                    "must return the same outputs.")
        ds = xr.Dataset({k: (dim, np.asarray([r[k] for r in results])) for k in keys})
    else:
        parts = [xr.Dataset(r) if isinstance(r, dict) else r for r in results]
        for i, part in enumerate(parts):
            if dim in part.dims or dim in part.variables:
                raise InputValueError(
                    f"task {i} returned a result that already has a {dim!r} dimension or "
                    "variable; pass another dim= name.")
        try:
            ds = xr.concat(parts, dim=dim, data_vars="all", coords="different", compat="equals",
                           join=join, combine_attrs="drop_conflicts")
        except (ValueError, KeyError) as exc:
            raise InputValueError(
                f"the task results could not be combined along {dim!r} ({exc}); every task must "
                "return the same variables on compatible coordinates.") from exc
    coords: dict[str, Any] = {dim: np.arange(n), "seed": (dim, np.asarray([t.seed for t in tasks]))}
    for key in tasks[0].params:
        if key in ds.variables:
            raise InputValueError(
                f"parameter {key!r} has the name of a result variable; rename one of them.")
        values = [t.params[key] for t in tasks]
        if all(_is_scalar(v) for v in values):
            coords[key] = (dim, np.asarray(values))
    return ds.assign_coords(coords)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool | numbers.Number | np.generic)

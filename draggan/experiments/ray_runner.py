"""Run a protocol's jobs in this process, or as Ray actors (one bench per worker, loaded once).

A job function `fn(bench, job) -> record` is module-level (Ray pickles it by reference) and
a job is plain data. Both runners return the records in job order, so the summary of a Ray
run is computed exactly as the in-process one. Ray is optional: `pip install -r
requirements-experiments.txt`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from .detectors import INSTALL_HINT, ExperimentSetupError
from .report import Interrupted, Progress
from .workbench import Bench, BenchSpec, load_bench

JobFn = Callable[[Bench, Any], dict[str, Any]]


def map_jobs(fn: JobFn, jobs: Sequence[Any], bench: Bench, ray: str | None = None,
             progress: Progress | None = None, label: Callable[[Any], str] = str) -> list[dict[str, Any]]:
    """fn(bench, job) for every job, in order: here, or on Ray when `ray` is 'local', 'auto' or an address."""
    if ray is None:
        records = []
        try:
            for job in jobs:
                records.append(fn(bench, job))
                if progress:
                    progress(label(job))
        except Interrupted as stop:  # stopped (by progress, or inside an edit): hand over what is done
            stop.records = records
            raise
        return records
    if bench.spec is None:
        raise ExperimentSetupError("a Ray run needs a model spec (catalog name or file) to load on each worker, "
                                   "not a generator built in code")
    return _map_on_ray(fn, jobs, bench.spec, ray, progress, label)


class _Worker:
    """A Ray actor: one bench, loaded once, then any number of jobs."""

    def __init__(self, spec: BenchSpec):
        self.bench = load_bench(spec)

    def run(self, fn: JobFn, index: int, job: Any) -> tuple[int, dict[str, Any]]:
        return index, fn(self.bench, job)


def connect(address: str) -> Any:
    """The ray module, initialised: 'local' starts a runtime here, 'auto' joins a running cluster, else ADDRESS.

    A runtime already initialised in this process (e.g. by a test) is used as it is.
    """
    try:
        import ray
    except ImportError:
        raise ExperimentSetupError(f"--ray needs Ray: {INSTALL_HINT}") from None
    if not ray.is_initialized():
        # Local workers import this checkout; a cluster's nodes need the package installed.
        env = {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}} if address == "local" else None
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, configure_logging=False, runtime_env=env)
    return ray


def _map_on_ray(fn: JobFn, jobs: Sequence[Any], spec: BenchSpec, address: str, progress: Progress | None,
                label: Callable[[Any], str]) -> list[dict[str, Any]]:
    ray = connect(address)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:  # one worker per GPU, each generator on its own GPU
        count, options, spec = gpus, {"num_gpus": 1, "num_cpus": 1}, dataclasses.replace(spec, device="cuda")
    else:
        count, options, spec = int(resources.get("CPU", 1)), {"num_cpus": 1}, dataclasses.replace(spec, device="cpu")
    actor = ray.remote(**options)(_Worker)
    workers = [actor.remote(spec) for _ in range(max(1, min(count, len(jobs))))]
    pool = ray.util.ActorPool(workers)
    for i, job in enumerate(jobs):
        pool.submit(lambda w, ij: w.run.remote(fn, *ij), (i, job))
    records: list[dict[str, Any] | None] = [None] * len(jobs)
    while pool.has_next():
        i, record = pool.get_next_unordered()
        records[i] = record
        if progress:
            progress(label(jobs[i]))
    for w in workers:
        ray.kill(w)
    return records  # type: ignore[return-value]

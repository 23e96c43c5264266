"""``simulate --shards N``: the samples of one simulation split across Ray workers, merged into the
files one process writes.

The test split is cut into ``N`` contiguous ranges of whole batches (a shard's batches are the
batches the one-process run would form, so every backend — the float one included — sees the
same inputs in the same groups). Each shard is a Ray task (``htakl_deploy.cluster``) that loads
the artefact and the data itself and writes its own spike file under ``OUT/.shards/``; the
command then appends the shards' files, in order, to one ``OUT/spikes.h5`` without unpacking
them (``SpikeWriter.append_file``) and adds up their exact counts (``simulate.Tally``):
``spikes.h5`` holds the same datasets, chunk for chunk, with the same attributes, and
``simulate.json`` the same numbers as a one-process run's (only the timings differ, and it
says ``"shards"``). A shard that fails fails the command (one line naming the shard and its
log); nothing is left in ``OUT``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from htakl_deploy.errors import UserError

SHARDS_DIR = ".shards"


def shard_ranges(samples: int, batch: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ranges of whole batches covering ``0:samples`` (fewer when there
    are fewer batches), as even as whole batches allow."""
    batches = -(-samples // batch)
    k = min(shards, batches)
    bounds = [min(samples, (i * batches // k) * batch) for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


def simulate_shard(artefact: str, shown: str, settings: dict, start: int, stop: int, out: str) -> dict[str, Any]:
    """On a worker: samples ``start:stop`` into ``out/spikes.h5``; the exact counts back.
    ``shown``: the artefact as the command named it (the spike file's attribute)."""
    import dataclasses

    from htakl_deploy.hw.simulate import prepare, run_range

    job = dataclasses.replace(prepare(artefact, **settings), shown=shown)
    try:
        tally, writer = run_range(job, start, stop, Path(out) / "spikes.h5")
        writer.close()  # a shard's silent layer is no error: the merged recording is checked
    finally:
        job.close()
    return {"tally": tally, "input_magnitudes": writer.magnitudes.tolist()}


def simulate_sharded(job, shards: int, *, address: str | None, cpus: int | None, data_root: str | None,
                     input_file: str | Path | None = None, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run ``job`` (a checked ``hw.simulate.Simulation``) in ``shards`` Ray tasks; merge; report."""
    from htakl_deploy import cluster
    from htakl_deploy.energy.spikefile import SpikeWriter, open_spikes
    from htakl_deploy.hw.simulate import Tally, finish

    cluster.check_ray_flags(address, cpus)
    ranges = shard_ranges(job.samples, job.batch, shards)
    parts = job.out / SHARDS_DIR
    shutil.rmtree(parts, ignore_errors=True)  # an interrupted earlier split leaves nothing to reuse
    settings = {"backend": job.backend, "samples": job.samples, "timesteps": job.timesteps,
                "data_root": None if data_root is None else str(Path(data_root).resolve()), "compare": job.compare_lava or job.f_graph is not None,
                "batch_size": job.batch, "record": job.record, "device": job.device, "out_dir": str(job.out),
                "input_file": None if input_file is None else str(Path(input_file).resolve())}
    t_start = time.perf_counter()
    writer = None
    try:
        with cluster.ray_session(address, cpus) as session:
            per = max(1.0, float(int(session.cpus // len(ranges)))) if session.cpus >= len(ranges) else 1.0
            jobs = [cluster.Job(f"shard {i + 1}/{len(ranges)} (samples {a}:{b})", simulate_shard,
                                {"artefact": str(job.path.resolve()), "shown": job.shown, "settings": settings, "start": a, "stop": b,
                                 "out": str((parts / str(i)).resolve())}, cpus=per,
                                gpus=1.0 if job.device == "cuda" else 0.0, log=str((parts / f"{i}.log").resolve()))
                    for i, (a, b) in enumerate(ranges)]
            done = [0]

            def finished(o) -> None:
                if o.ok and progress is not None:
                    done[0] += o.result["tally"].samples
                    progress(done[0])

            outcome = cluster.run_jobs(session, jobs, on_done=finished, say=lambda line: None)
            ray_start_s = session.start_s
        failed = [o for o in outcome.values() if not o.ok]
        if failed:
            raise UserError(f"simulate --shards: {failed[0].name} failed: {failed[0].error}"
                            + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))
        tally = Tally()
        for i, j in enumerate(jobs):
            part = outcome[j.name].result
            tally.merge(part["tally"])
            with open_spikes(parts / str(i) / "spikes.h5") as f:
                if writer is None:
                    writer = SpikeWriter(job.out / "spikes.h5", layer_shapes={n: f.shapes[n][2:] for n in f.layer_order},
                                         timesteps=job.timesteps, record=job.record, attrs=job.attrs(f.layer_order))
                writer.append_file(f, part["input_magnitudes"], job.batch)
        tally.wall_s = time.perf_counter() - t_start  # the split's own wall time, not the sum of the shards'
        return finish(job, tally, writer, tally.wall_s, shards=len(ranges), ray_start_s=ray_start_s,
                      shard_wall_s=[outcome[j.name].wall_s for j in jobs])  # closes (or aborts) the writer
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def neurobench_shard(spikes: str, graph: str, samples: slice) -> dict:
    """On a worker: the NeuroBench per-step ops of every conv/dense node over ``samples`` (a part
    of a ``counter.spread``)."""
    from htakl_deploy.energy.counter import neurobench_rows
    from htakl_deploy.energy.spikefile import open_spikes
    from htakl_deploy.export.nir_in import read_graph

    g = read_graph(graph)  # NIR or netx, as energy reads it
    with open_spikes(spikes) as rec:
        return neurobench_rows(getattr(g, "graph", g), rec, samples)


def neurobench_sharded(spikes: str | Path, graph: str | Path, samples: int, spread: slice, shards: int, *,
                       address: str | None = None, cpus: int | None = None) -> dict:
    """``energy --shards N``: the NeuroBench-style counts (the pass that reads every spike of the
    ``spread`` of the recording's ``samples`` it runs on) over ``shards`` consecutive parts of the
    spread on Ray, merged exactly (``counter.merge_steps``); the other counts come from the
    file's per-neuron sums and take no pass."""
    from htakl_deploy import cluster
    from htakl_deploy.energy.counter import merge_steps, split_spread

    cluster.check_ray_flags(address, cpus)
    parts = split_spread(spread, samples, shards)
    with cluster.ray_session(address, cpus) as session:
        per = max(1.0, float(int(session.cpus // len(parts))))
        jobs = [cluster.Job(f"shard {i + 1}/{len(parts)} (samples {p.start}:{p.stop}:{p.step})", neurobench_shard,
                            {"spikes": str(Path(spikes).resolve()), "graph": str(Path(graph).resolve()), "samples": p},
                            cpus=min(per, session.cpus))
                for i, p in enumerate(parts)]
        outcome = cluster.run_jobs(session, jobs, say=lambda line: None)
    failed = [o for o in outcome.values() if not o.ok]
    if failed:
        raise UserError(f"energy --shards: {failed[0].name} failed: {failed[0].error}")
    results = [outcome[j.name].result for j in jobs]
    return {row: merge_steps([r[row] for r in results]) for row in results[0]}

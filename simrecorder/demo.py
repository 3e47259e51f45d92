"""A small but real simulation for ``simrecorder demo``: a leaky integrate-and-fire
network of excitatory and inhibitory neurons driven by Poisson input (Brunel-style),
recording membrane potentials, spikes and population rates every step."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import TextIO

import numpy as np

from .recorder import Recorder

__all__ = ["LIFParameters", "run_demo"]


@dataclass
class LIFParameters:
    """Parameters of the demo network (times in ms, potentials in mV)."""

    n_neurons: int = 1000
    excitatory_fraction: float = 0.8
    connection_probability: float = 0.1
    dt: float = 0.1
    tau_m: float = 20.0
    v_rest: float = 0.0
    v_threshold: float = 20.0
    v_reset: float = 10.0
    refractory: float = 2.0
    j_excitatory: float = 0.2
    g_inhibition: float = 5.0
    external_rate_khz: float = 13.0
    seed: int = 1


def _progress(out: TextIO, done: int, step: int, total: int, started: float) -> None:
    width = 30
    filled = width * done // total
    elapsed = time.perf_counter() - started
    interactive = out.isatty()
    if not interactive and done != total and done * 4 // total == (done - step) * 4 // total:
        return  # in logs: a line at each quarter only
    start = "\r" if interactive else ""
    out.write(
        f"{start}[{'#' * filled}{'.' * (width - filled)}] {done}/{total} steps {elapsed:5.1f} s"
    )
    if done == total or not interactive:
        out.write("\n")
    out.flush()


def run_demo(
    recorder: Recorder,
    steps: int = 5000,
    params: LIFParameters | None = None,
    progress: TextIO | None = sys.stderr,
) -> dict[str, float]:
    """Simulate the network for ``steps`` steps, recording into ``recorder``.

    Records per step: ``neurons/v`` (float32 potentials of all neurons),
    ``neurons/spikes`` (indices of the neurons that fired: a ragged object series),
    ``population/rate_hz``, ``population/spike_count`` and ``input/mean_mV``; and once:
    ``params/*`` via ``set`` and run attributes.

    Returns
    -------
    dict
        ``records``, ``seconds`` (simulation loop wall time) and ``records_per_s``.
    """
    p = params or LIFParameters()
    rng = np.random.default_rng(p.seed)
    n = p.n_neurons
    n_exc = int(n * p.excitatory_fraction)
    weights = (rng.random((n, n)) < p.connection_probability).astype(np.float32)
    weights[:, :n_exc] *= p.j_excitatory
    weights[:, n_exc:] *= -p.g_inhibition * p.j_excitatory
    v = rng.uniform(p.v_rest, p.v_threshold, n).astype(np.float32)
    refractory_left = np.zeros(n, dtype=np.float32)
    spiked = np.zeros(n, dtype=bool)
    decay = np.float32(np.exp(-p.dt / p.tau_m))
    external_lambda = p.external_rate_khz * p.dt

    for name, value in asdict(p).items():
        recorder.set(f"params/{name}", value)
    recorder.attrs.update({"model": "LIF network (Brunel-style)", "steps": steps})

    records = 0
    started = time.perf_counter()
    report_every = max(1, steps // 50)
    for step in range(steps):
        external = rng.poisson(external_lambda, n).astype(np.float32) * p.j_excitatory
        recurrent = weights[:, spiked].sum(axis=1) if spiked.any() else 0.0
        active = refractory_left <= 0
        v = np.where(active, p.v_rest + (v - p.v_rest) * decay + external + recurrent, v)
        refractory_left -= p.dt
        spiked = v >= p.v_threshold
        v[spiked] = p.v_reset
        refractory_left[spiked] = p.refractory
        count = int(spiked.sum())

        recorder.record("neurons/v", v)
        # a dict makes this an object series: the number of spikes varies per step
        recorder.record("neurons/spikes", {"t_ms": step * p.dt, "ids": np.flatnonzero(spiked)})
        recorder.record("population/spike_count", count)
        recorder.record("population/rate_hz", count / n / (p.dt * 1e-3))
        recorder.record("input/mean_mV", float(external.mean()))
        records += 5
        if progress is not None and (step + 1) % report_every == 0:
            _progress(progress, step + 1, report_every, steps, started)
    recorder.flush()
    seconds = time.perf_counter() - started
    mean_rate = float(np.mean(recorder.get_all("population/rate_hz")))
    return {
        "records": records,
        "seconds": seconds,
        "records_per_s": records / seconds,
        "mean_rate_hz": mean_rate,
    }


def summary_table(recorder: Recorder) -> str:
    """A text table of every key in the recorder's first store."""
    store = recorder.datastores[0]
    rows = [("key", "kind", "samples", "sample shape", "dtype")]
    for key in recorder.keys():
        if store.node_type(key) == "value":
            value = store.get(key)
            rows.append((key, "value", "-", str(np.shape(value)), type(value).__name__))
            continue
        spec = store.series_spec(key)
        assert spec is not None  # a key that is not a value is a series
        data = store.get_all(key)
        if spec.kind == "dense":
            rows.append((key, "dense", str(len(data)), str(spec.shape), str(spec.dtype)))
        else:
            rows.append((key, spec.kind, str(len(data)), "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

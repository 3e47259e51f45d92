"""``--plot``: a bar chart of the results (needs matplotlib, the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(rows: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    """Draw µs per scalar record and 8 MiB-array GB/s per subject into ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit("--plot needs matplotlib: pip install 'simrecorder[plot]'") from exc
    scalar = [r for r in rows if r["workload"] == "scalar" and r.get("us_per_record")]
    large = [r for r in rows if r["workload"] == "8 MiB arrays" and r.get("mb_per_s")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    for axis, data, field, scale, label in (
        (left, scalar, "us_per_record", 1.0, "µs per record (log scale, lower is better)"),
        (right, large, "mb_per_s", 1e-3, "GB/s for 8 MiB samples (higher is better)"),
    ):
        names = [r["subject"] for r in data]
        values = [r[field] * scale for r in data]
        colors = ["tab:blue" if n.startswith("simrecorder/") else "tab:gray" for n in names]
        axis.barh(names, values, color=colors)
        axis.set_xlabel(label)
        axis.invert_yaxis()
        if field == "us_per_record":
            axis.set_xscale("log")
    left.set_title("1 float per record into one series")
    right.set_title("100 x 8 MiB arrays")
    fig.suptitle(f"simrecorder benchmarks · {meta['date']} · {meta['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)

"""The run record of ``distill`` / ``evaluate`` / ``compare``: resolved configuration and its hash,
one row per evaluation model, aggregates, wall time per phase and the environment.

These fields are added to what each command already writes (``record.json``, the evaluation JSON,
``summary.json``); nothing there is removed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .checkpoint import config_hash
from .config import EvalConfig
from .evaluate import EvalResult


class PhaseTimer:
    """Wall time per named phase, in seconds (a phase entered twice adds up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def model_rows(result: EvalResult, config: EvalConfig, name: str | None = None) -> list[dict[str, Any]]:
    """One row per evaluation model (of every architecture evaluated): seed, architecture, headline metrics."""
    per_arch = result.by_model or {result.model or config.model: result}
    rows = []
    for a, (arch, res) in enumerate(per_arch.items()):
        for j, (seed, r) in enumerate(zip(res.seeds, res.reports, strict=True)):
            row: dict[str, Any] = {} if name is None else {"set": name}
            row.update(
                index=a * config.num_models + j,
                seed=seed,
                architecture=arch,
                model_kwargs=dict(config.kwargs_for(arch)),
                acc=r.acc,
                deo_m=r.deo_m,
                deo_a=r.deo_a,
                worst_group_acc=r.worst_group_acc,
                suff_m=r.suff_m,
                suff_a=r.suff_a,
                empty_cells=len(r.empty_cells),
                empty_cell_list=[[int(g), int(c)] for g, c in r.empty_cells],
                empty_cells_mode=config.empty_cells,
            )
            rows.append(row)
    return rows


def run_record(config: dict[str, Any], timings: dict[str, float], **fields: Any) -> dict[str, Any]:
    """The shared record fields: ``config``, ``config_hash`` (sha256 of its canonical JSON), ``timings``."""
    return {"config": config, "config_hash": config_hash(config), **fields, "timings": dict(timings)}

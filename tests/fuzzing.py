"""The harness of the fuzz suite (``tests/test_fuzz_*.py``): run a bad input, check it was refused well.

Two ways to run a command:

* :func:`cli` runs ``fairdistill ARGS`` in a fresh Python process whose address space is capped
  with ``resource.setrlimit(RLIMIT_AS)`` (:data:`MEMORY_LIMIT`: the imports take about 0.7 GB, so
  an input that makes the tool allocate more than about 2 GB dies with a MemoryError, i.e. a
  traceback, and the test fails) and with a wall-clock timeout (a hang fails too). It costs about a
  second per call (the imports), so the suite uses it for the cases where memory or the process
  matters and runs the others in-process.
* :func:`cli_inprocess` runs the same command through typer's test runner: fast, no memory cap.

:func:`assert_refused` is the contract of a refusal: exit code 2, exactly one short line on stderr
beginning ``error:``, no traceback, and (with ``root``) no file left anywhere under ``root`` except
where ``allowed`` says.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

#: the address-space cap of a fuzzed process, in bytes (imports ~0.7 GB + a 2 GB allowance, rounded)
MEMORY_LIMIT = int(2.75 * 2**30)
#: the longest a refusal may take, in seconds (a refusal is immediate; a hang is a failure)
TIMEOUT = 120
#: the longest one-line error we accept, in characters
MAX_ERROR = 600


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def _cap_memory() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def cli(
    *args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> Outcome:
    """``fairdistill ARGS`` in a subprocess capped at :data:`MEMORY_LIMIT` bytes of address space."""
    full_env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "fairdistill", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_cap_memory,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


_runner = CliRunner()


def cli_inprocess(*args: str) -> Outcome:
    """``fairdistill ARGS`` through typer's runner, in this process (no memory cap)."""
    from fairdistill.cli import app

    res = _runner.invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        # an escaped exception is a crash: report it as the traceback it would have printed
        import traceback

        tb = "".join(traceback.format_exception(res.exception))
        return Outcome(1, res.stdout, "Traceback (most recent call last):\n" + tb)
    return Outcome(res.exit_code, res.stdout, getattr(res, "stderr", "") or "")


def files_under(root: str | Path) -> set[Path]:
    """Every file and symlink under ``root`` (relative paths)."""
    root = Path(root)
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def assert_refused(
    outcome: Outcome,
    match: str | None = None,
    *,
    root: str | Path | None = None,
    before: set[Path] | None = None,
) -> None:
    """Exit code 2, one line ``error: ...`` on stderr (containing ``match``), no traceback; with
    ``root`` and ``before``, no new file under ``root``."""
    err = outcome.stderr.strip()
    assert "Traceback" not in outcome.stderr, f"a traceback:\n{outcome.stderr[-3000:]}"
    assert outcome.code == 2, f"exit code {outcome.code}, stderr: {outcome.stderr[-2000:]}"
    lines = err.splitlines()
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err[:2000]}"
    assert lines[0].startswith("error:"), lines[0]
    assert len(lines[0]) <= MAX_ERROR, f"a {len(lines[0])}-character error: {lines[0][:300]}..."
    if match is not None:
        assert match in lines[0], f"{match!r} not in {lines[0]!r}"
    if root is not None and before is not None:
        new = files_under(root) - before
        assert not new, f"files left behind: {sorted(map(str, new))}"

"""Running the `vseg` command in a subprocess, and checking its one-line errors."""

import os
import subprocess
import sys


def vseg(*args):
    """``python -m vseg ARGS`` with one OpenMP thread (see the one_torch_thread fixture)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vseg", *args], capture_output=True, text=True, env=env, check=False)


def one_error_line(result):
    """The single ``error:`` line of a failed command (no traceback, non-zero exit)."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]

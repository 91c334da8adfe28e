"""Run a command as a user would, with a wall-clock limit, and measure its peak resident memory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Sequence


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_mb: float  # the largest resident set of the process or of any child it waited for
    timed_out: bool
    cpu_s: float = 0.0  # the process's own CPU time: a timed-out run that used little was starved or blocked

    def hung(self) -> str:
        """The message for a timed-out run: the CPU it got tells a starved machine from a loop."""
        return f"killed after its time limit, having used {self.cpu_s:.1f} s of CPU: {self.stderr[-2000:]}"


def run_measured(args: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> Measured:
    """Run `args` in its own session; kill the whole session after `timeout` s (a hang fails the test, it
    does not stall CI). wait4 gives this one process's rusage, not the max over every child of pytest."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(args), stdout=out, stderr=err, env=env, start_new_session=True)
        fired = threading.Event()

        def kill() -> None:
            fired.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        return Measured(proc.returncode, out.read().decode("utf-8", "backslashreplace"),
                        err.read().decode("utf-8", "backslashreplace"), usage.ru_maxrss / 1024, fired.is_set(),
                        usage.ru_utime + usage.ru_stime)


def omnisdk(*args: str) -> list[str]:
    return [sys.executable, "-m", "omnisdk", *args]


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMNISDK_PIPE_TIMEOUT_S": "0.5", "PYTHONIOENCODING": "utf-8",
            "OMP_NUM_THREADS": "1", **extra}

"""A process that imports the heavy modules once, then forks one child per job: a kill test pays for
the job, not for a fresh interpreter importing torch (about 2.5 s of CPU each, 10 s of wall on a
loaded machine).

The server itself runs no torch operation, only imports: a child forked after an OpenMP parallel
region could hang in its first one. Each child sets its environment (OMNISDK_KILL_AT names the kill
point, omnisdk/faults.py), calls `module.function(*args)` and exits; its exit status comes back as
subprocess gives it (-9 for SIGKILL), with what it printed.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SERVER = r"""
import importlib, json, os, sys, traceback
for name in sys.argv[1:]:
    importlib.import_module(name)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.environ.update(job["env"])
            module, function = job["call"].rsplit(".", 1)
            getattr(importlib.import_module(module), function)(*job["args"])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status, usage = os.wait4(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)
"""


class ForkServer:
    """`run(call, *args, env=...)` -> (returncode, output) of `call` in a child forked from the server;
    `cpu_s` holds each job's CPU seconds (the cost a kill test pays, whatever the machine's load)."""

    def __init__(self, preload: list[str]):
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env.pop("OMNISDK_KILL_AT", None)
        self._logs = tempfile.TemporaryDirectory(prefix="omnisdk-fork-")
        self._proc = subprocess.Popen([sys.executable, "-c", SERVER, *preload], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, cwd=ROOT, env=env)
        self._jobs, self._pending, self.cpu_s = 0, b"", []

    def run(self, call: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, str]:
        self._jobs += 1
        log = Path(self._logs.name) / f"job-{self._jobs}.log"
        self._proc.stdin.write(json.dumps({"call": call, "args": [str(a) for a in args], "env": env or {}, "log": str(log)}) + "\n")
        self._proc.stdin.flush()
        pid = self._read(timeout)["pid"]
        try:
            done = self._read(timeout)
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            self._read(60)
            raise TimeoutError(f"{call}{tuple(args)} ran over {timeout} s: {log.read_text()[-2000:]}") from None
        self.cpu_s.append(done["cpu_s"])
        return done["returncode"], log.read_text(errors="replace")

    def _read(self, timeout: float) -> dict:
        """The server's next line (its stdout read unbuffered, so select sees every line that waits)."""
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the fork server exited ({self._proc.wait()})")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=60)
        self._logs.cleanup()

"""Start and stop the sandbox's server processes so that none is ever left behind.

Two ways to own a process: the tests keep it tied to their own life (Linux's parent-death
signal kills it even if pytest itself is killed), while `fogctl sandbox up` detaches it into a
session of its own and records its pid, so `fogctl sandbox down` can stop it later.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

# prctl(PR_SET_PDEATHSIG, SIGKILL): the kernel kills the child when its parent dies.
_PR_SET_PDEATHSIG = 1
# etcd and kube-apiserver shut down cleanly in well under a second; 10 s covers a busy CI
# machine before we fall back to SIGKILL.
STOP_TIMEOUT_SECONDS = 10.0
# How often we look again whether a stopping process is gone.
POLL_SECONDS = 0.05


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(argv: list[str], *, log: Path, attached: bool) -> subprocess.Popen[bytes]:
    """Start `argv` with its output in `log`; `attached` ties it to this process's life."""
    with log.open("ab") as output:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=not attached,
            preexec_fn=_die_with_parent if attached else None,
        )


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie of ours)."""
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(pid: int, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM, wait, then SIGKILL: the process is gone when this returns."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(POLL_SECONDS)

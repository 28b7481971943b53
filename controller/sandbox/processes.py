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


# Children started by this process, kept so they are reaped (no zombies, no ResourceWarning
# from a Popen collected while its process runs) when `stop` ends them.
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(argv: list[str], *, log: Path, attached: bool) -> int:
    """Start `argv` with its output in `log` and return its pid.

    `attached` ties the process to this one's life; otherwise it outlives us.
    """
    with log.open("ab") as output:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=not attached,
            # preexec_fn is unsafe with threads; the sandbox starts before any thread.
            preexec_fn=_die_with_parent if attached else None,
        )
    _children[child.pid] = child
    return child.pid


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie of ours)."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
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
                _children.pop(pid, None)
                return
            time.sleep(POLL_SECONDS)

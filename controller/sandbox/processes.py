"""Start and stop the sandbox's processes so that none is ever left behind.

Every process the sandbox, the tests and the benchmark start goes through here: the servers
(etcd, kube-apiserver) and the product's own `fogctl` processes (operator, agents, see
`harness`). Two ways to own a process: the tests and the benchmark keep it tied to their own
life (Linux's parent-death signal kills it even if pytest itself is killed), while `fogctl
sandbox up` detaches it into a session of its own and records its pid, so `fogctl sandbox
down` can stop it later.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

# prctl(PR_SET_PDEATHSIG, SIGKILL): the kernel kills the child when its parent dies.
_PR_SET_PDEATHSIG = 1
# etcd and kube-apiserver shut down cleanly in well under a second; 10 s covers a busy CI
# machine before we fall back to SIGKILL.
STOP_TIMEOUT_SECONDS = 10.0
# How often we look again whether a stopping process is gone.
POLL_SECONDS = 0.05


# Looked up once, here: the child between fork and exec then only makes the one call, and
# loads no library while another thread of the parent may have held the loader's lock.
_prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl


def _die_with_parent() -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# Children started by this process, kept so they are reaped (no zombies, no ResourceWarning
# from a Popen collected while its process runs) when `stop` ends them.
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    argv: list[str],
    *,
    log: Path,
    attached: bool,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start `argv` with its output appended to `log` and return its pid.

    `attached` ties the process to the life of the calling thread (the kernel's parent-death
    signal follows the thread that forked); otherwise it outlives us. `env` replaces our
    environment when given.
    """
    with log.open("ab") as output:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=not attached,
            # preexec_fn runs Python between fork and exec; it is safe here because it takes
            # no lock another thread could hold (the prctl symbol is resolved at import).
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


def exit_code(pid: int) -> int | None:
    """The exit code of a child of ours that has exited; None while it runs (or if unknown)."""
    child = _children.get(pid)
    return None if child is None else child.poll()


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

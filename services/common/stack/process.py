"""Tiny process bookkeeping for the stack: pid files, liveness, stop with a deadline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int | None, marker: str | None = None) -> bool:
    """True if ``pid`` runs and (when given) its command line contains ``marker``."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        if state == "Z":
            return False
        if marker is not None:
            return marker in _cmdline(pid)
    except OSError:
        return False
    return True


def _cmdline(pid: int, wait_s: float = 2.0) -> str:
    """The command line of ``pid``. Right after ``Popen`` returns, the kernel may not have set up the new
    program's arguments yet (``exec`` closes the pipe Popen waits on first): the command line reads empty
    for a moment, longer on a busy box. An empty one is read again for up to ``wait_s``; a kernel thread's
    stays empty. Taking the empty read for "not our process" once started a second Kafka JVM over the
    first."""
    path = Path(f"/proc/{pid}/cmdline")
    deadline = time.monotonic() + wait_s
    while True:
        raw = path.read_bytes()
        if raw or time.monotonic() > deadline:
            return raw.replace(b"\0", b" ").decode(errors="replace")
        time.sleep(0.01)


def find_pid(*needles: str) -> int | None:
    """The lowest pid whose command line contains every one of ``needles`` (a live process), or None."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in cmd for n in needles) and alive(int(entry.name)):
            found.append(int(entry.name))
    return min(found) if found else None


def spawn(
    cmd: list[str], *, cwd: Path, log_file: Path, pid_file: Path, env: dict[str, str] | None = None
) -> int:
    """Start ``cmd`` detached (own session) with output to ``log_file``; records and returns its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid


def stop(pid: int | None, marker: str | None, timeout_s: float = 30.0) -> bool:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns True if it had to kill."""
    if not alive(pid, marker):
        return False
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid, marker):
            return False
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    for _ in range(50):
        _reap(pid)
        if not alive(pid, marker):
            break
        time.sleep(0.1)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False

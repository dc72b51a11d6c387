"""Collection workers forked from one process that imported the SDKs once.

Each collection worker used to be a fresh `python -m auditor.workers` that imported the cloud
SDKs itself: about two CPU-seconds a worker (google-cloud-compute's message classes are most
of it), paid again by every worker of every scan. A fork server pays it once: it is started
afresh like a worker (`python -m auditor.forkserver`, so no process with threads is ever
forked, and a caller's script is never imported again), imports the SDKs the scan's providers
name, leaves those objects out of the garbage collector's passes (`gc.freeze`, so that the
forked workers share their memory pages instead of copying them), and then forks one worker
each time the scan asks. A forked worker runs `auditor.workers.worker_main` on two pipes the
scan made, exactly as a started one runs it on its stdin and stdout.

The scan and the server talk over a Unix socket: the scan sends the SDK modules to import,
then one message per worker carrying the worker's two pipe ends (SCM_RIGHTS); the server
answers with each worker's pid and, once it has reaped it, its exit code. A worker whose
server is gone goes on (its pipes are the scan's); its exit code is then unknown.

Elsewhere than on Linux, or when the server cannot start, workers are started one by one as
before (`auditor.workers`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

#: How long the scan waits for the server to import the SDKs and say it is ready.
READY_TIMEOUT_S = 120.0
#: How often the server looks for ended workers while it waits for the scan.
_REAP_S = 0.2
_FORK = b"F"
_HEADER = struct.Struct("!I")


#: The exit code of a worker that ended after its fork server: unknown.
UNKNOWN_EXIT = -255


def _alive(pid: int) -> bool:
    """Whether `pid` is a running process (not one that ended and waits to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class ForkServerError(Exception):
    """The fork server could not start or fork: the caller starts workers itself."""


def child_env() -> dict[str, str]:
    """The environment of a process the scan starts to read for it (the fork server, or a
    worker started by itself): this one's, with its import path, so it imports what we do."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def available() -> bool:
    """Linux only: macOS frameworks a worker may touch after the fork (the proxy settings
    `requests` reads) are not safe there, which is why Python's own default is spawn."""
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds")


# ============================================================================ messages
def _send(sock: socket.socket, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _tell(sock: socket.socket, message: Any) -> None:
    """The server's messages: a scan that closed its end is told nothing (it has stopped
    listening; its workers end when their pipes close)."""
    with contextlib.suppress(OSError):
        _send(sock, message)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> Any:
    """One message, or None when the other side has closed."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    data = _recv_exact(sock, _HEADER.unpack(header)[0])
    return None if data is None else pickle.loads(data)


# ============================================================================ the scan's side
class ForkedWorker:
    """A forked worker as `subprocess.Popen` shows a started one: its pipes, `poll`, `wait`,
    `kill`. Its exit code comes from the server that reaped it."""

    def __init__(self, server: ForkServer, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self._server = server
        self.pid = pid
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout

    def poll(self) -> int | None:
        return self._server.exit_code(self.pid)

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code; UNKNOWN_EXIT if it ended after its server did (no one told us)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        code = self._server.wait_for(self.pid, timeout)
        while code is None and self._server.gone:
            if not _alive(self.pid):
                return UNKNOWN_EXIT
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if code is None:
            raise subprocess.TimeoutExpired(f"collection worker {self.pid}", timeout or 0.0)
        return code

    def kill(self) -> None:
        if self.poll() is None:  # not reaped: the pid is still this worker's
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)


class ForkServer:
    """The scan's handle on a fork server: `fork()` a worker, `close()` when every worker it
    forked has been waited for."""

    def __init__(self, modules: Sequence[str]) -> None:
        if not available():
            raise ForkServerError("fork is not available on this platform")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "auditor.forkserver", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=child_env(),
                start_new_session=True,  # a terminal's Ctrl-C reaches the scan only
            )
        except OSError as err:
            ours.close()
            raise ForkServerError(f"could not start the fork server: {err}") from err
        finally:
            theirs.close()
        self._sock = ours
        self._send_lock = threading.Lock()
        self._changed = threading.Condition()
        self._exits: dict[int, int] = {}
        self._forked: list[Any] = []  # replies to fork requests, in order
        self._gone = False
        try:
            _send(ours, list(modules))
            ours.settimeout(READY_TIMEOUT_S)
            ready = _recv(ours)
            ours.settimeout(None)
        except OSError as err:
            self.close()
            raise ForkServerError(f"the fork server did not answer: {err}") from err
        except BaseException:  # interrupted while it imports: it must not outlive the scan
            self.close()
            raise
        if not (isinstance(ready, tuple) and ready and ready[0] == "ready"):
            self.close()
            why = ready[1] if isinstance(ready, tuple) and len(ready) > 1 else "it ended"
            raise ForkServerError(f"the fork server could not start: {why}")
        self._reader = threading.Thread(target=self._read, name="forkserver", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                message = _recv(self._sock)
                if message is None:
                    break
                with self._changed:
                    if message[0] == "exit":
                        self._exits[int(message[1])] = int(message[2])
                    else:
                        self._forked.append(message)
                    self._changed.notify_all()
        except (OSError, pickle.UnpicklingError, EOFError):
            pass
        with self._changed:
            self._gone = True
            self._changed.notify_all()

    def fork(self) -> ForkedWorker:
        """A new worker, reading requests from one new pipe and writing replies to another."""
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            with self._send_lock:
                try:
                    socket.send_fds(self._sock, [_FORK], [req_r, rep_w])
                except OSError as err:
                    raise ForkServerError(f"the fork server is gone: {err}") from err
                with self._changed:
                    while not self._forked and not self._gone:
                        self._changed.wait()
                    if not self._forked:
                        raise ForkServerError("the fork server ended")
                    reply = self._forked.pop(0)
        except BaseException:
            for fd in (req_w, rep_r):
                os.close(fd)
            raise
        finally:
            os.close(req_r)
            os.close(rep_w)
        if reply[0] != "forked":
            os.close(req_w)
            os.close(rep_r)
            raise ForkServerError(f"the fork server could not fork: {reply[1]}")
        return ForkedWorker(self, int(reply[1]), os.fdopen(req_w, "wb"), os.fdopen(rep_r, "rb"))

    @property
    def gone(self) -> bool:
        """The server ended (or was closed): no more exit codes will come."""
        with self._changed:
            return self._gone

    def exit_code(self, pid: int) -> int | None:
        with self._changed:
            return self._exits.get(pid)

    def wait_for(self, pid: int, timeout: float | None) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits or self._gone, timeout)
            return self._exits.get(pid)

    def close(self) -> None:
        """No more workers: the server reaps the ones it forked, then ends."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ============================================================================ the server
def serve(sock: socket.socket) -> int:
    """The server process: import, say ready, fork a worker per request, report exits."""
    from auditor.heap import import_modules
    from auditor.workers import worker_main  # before the fork: workers need it imported

    modules = _recv(sock)
    if modules is None:
        return 0
    import_modules(str(name) for name in modules)
    gc.collect()
    gc.freeze()  # forked workers then share these pages instead of copying them
    try:
        _send(sock, ("ready",))
    except OSError:  # the scan gave up waiting
        return 0
    children: set[int] = set()

    def reap(block: bool) -> None:
        for pid in list(children):
            done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
            if done:
                children.discard(pid)
                _tell(sock, ("exit", pid, os.waitstatus_to_exitcode(status)))

    sock.settimeout(_REAP_S)
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, 1, 2)
        except TimeoutError:
            reap(block=False)
            continue
        except OSError:
            break
        if not data:  # the scan closed: no more workers
            break
        if data != _FORK or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            _tell(sock, ("failed", "a fork request without its two pipes"))
            continue
        try:
            pid = os.fork()
        except OSError as err:
            for fd in fds:
                os.close(fd)
            _tell(sock, ("failed", str(err)))
            continue
        if pid == 0:  # the worker
            code = 2
            try:
                sock.close()
                code = worker_main(os.fdopen(fds[0], "rb"), os.fdopen(fds[1], "wb"))
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        children.add(pid)
        _tell(sock, ("forked", pid))
        reap(block=False)
    reap(block=True)
    return 0


def main() -> int:
    """`python -m auditor.forkserver FD`: the socket is FD; prints go to stderr."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the scan decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        return serve(sock)
    finally:
        with contextlib.suppress(OSError):
            sock.close()


if __name__ == "__main__":
    sys.exit(main())

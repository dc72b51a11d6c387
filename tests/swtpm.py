"""A real TPM 2.0 for the tests: Debian's swtpm on loopback, provisioned with tpm2-tools.

`.ci/run` installs `swtpm`, `swtpm-tools` and `tpm2-tools`. tpm2-tools only set the simulator up
(keys, NV indices, PCR extends), the way each cloud provisions its vTPM; the collector under test
talks to it with its own client (auditor/guest/tpm2.py) over the simulator's command socket.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

TOOLS = ("swtpm", "tpm2_createek", "tpm2_nvdefine")


def require_swtpm() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing and os.environ.get("CCAUDIT_REQUIRE_SWTPM"):
        pytest.fail(f"CCAUDIT_REQUIRE_SWTPM is set but {', '.join(missing)} is not installed")
    if missing:
        pytest.skip(f"needs Debian's swtpm and tpm2-tools ({', '.join(missing)} not found)")


def _free_port_pair() -> int:
    """A port p with p and p+1 free on loopback (swtpm's command and control ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port pair for swtpm")


class Swtpm:
    """One swtpm process with its own state directory; `tool` runs tpm2-tools against it."""

    def __init__(self, state: Path) -> None:
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.port = _free_port_pair()
        self.process = subprocess.Popen(
            [
                "swtpm",
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={state}",
                "--server",
                f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                "--ctrl",
                f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                "--flags",
                "not-need-init,startup-clear",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    self.stop()
                    raise RuntimeError(f"swtpm did not start: {err}") from None
                time.sleep(0.05)

    @property
    def address(self) -> str:
        """What the collector's --tpm takes."""
        return f"tcp:127.0.0.1:{self.port}"

    def tool(self, name: str, *args: str, stdin: bytes | None = None) -> bytes:
        """Run `tpm2_<name>`, then flush transient objects and sessions (swtpm has no
        resource manager, and tpm2-tools leave them loaded)."""
        env = dict(os.environ, TPM2TOOLS_TCTI=f"swtpm:host=127.0.0.1,port={self.port}")
        done = subprocess.run(
            [f"tpm2_{name}", *args],
            input=stdin,
            capture_output=True,
            env=env,
            cwd=self.state,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"tpm2_{name} {' '.join(args)}: {done.stderr.decode()}")
        for kind in ("-t", "-s"):
            subprocess.run(["tpm2_flushcontext", kind], env=env, capture_output=True, check=False)
        return done.stdout

    def persistent_ak(self, handle: int = 0x81000003) -> bytes:
        """An EK, an RSA AK (RSASSA-SHA256) under it, persisted at `handle`; the AK's PEM."""
        self.tool("createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
        self.tool(
            "createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s",
            "rsassa", "-u", "ak.pub", "-n", "ak.name",
        )  # fmt: skip
        self.tool("evictcontrol", "-C", "o", "-c", "ak.ctx", f"0x{handle:08x}")
        self.tool("readpublic", "-c", f"0x{handle:08x}", "-f", "pem", "-o", "ak.pem")
        return (self.state / "ak.pem").read_bytes()

    def nv_write(self, index: int, data: bytes, attributes: str) -> None:
        path = self.state / f"nv-{index:08x}.bin"
        path.write_bytes(data)
        self.tool("nvdefine", f"0x{index:08x}", "-C", "o", "-s", str(len(data)), "-a", attributes)
        self.tool("nvwrite", f"0x{index:08x}", "-C", "o", "-i", str(path))

    def extend(self, pcr: int, sha256: bytes) -> None:
        self.tool("pcrextend", f"{pcr}:sha256={sha256.hex()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()

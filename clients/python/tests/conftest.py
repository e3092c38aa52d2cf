"""Fixtures for the client's tests: a real witmqd on 127.0.0.1 (an ephemeral port, a temporary
data directory), certificates made with openssl, and a fake server for hostile input.

The witmqd binary is $WITMQD (ctest sets it from the build tree), else build/src/daemon/witmqd at
the top of the repository.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any, Awaitable, Dict, Iterator, List, Optional, TypeVar

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PACKAGE_ROOT))
sys.path.insert(0, PACKAGE_ROOT)

T = TypeVar("T")

# Every test's asyncio work runs under this bound: a client that hangs fails the test instead.
TEST_TIMEOUT = 60.0


def witmqd_path() -> str:
    path = os.environ.get("WITMQD") or os.path.join(REPO, "build", "src", "daemon", "witmqd")
    if not os.access(path, os.X_OK):
        pytest.fail("no witmqd at %s: build it (tools/build.sh) or set WITMQD" % path)
    return path


def run(coroutine: Awaitable[T], timeout: float = TEST_TIMEOUT) -> T:
    """Runs a coroutine on a fresh event loop, failing (not hanging) after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))  # type: ignore[arg-type]


class Daemon:
    """A witmqd process. ``address`` is its plain protocol listener, ``tls_address`` its TLS one."""

    def __init__(self, tmp: str, args: Optional[List[str]] = None,
                 config: Optional[Dict[str, Any]] = None, tls: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="witmqd-", dir=tmp)
        argv = [witmqd_path(), "--listen", "127.0.0.1:0", "--http-listen", "",
                "--data-dir", os.path.join(self.dir, "data")]
        if config is not None:
            path = os.path.join(self.dir, "witmqd.json")
            with open(path, "w") as f:
                json.dump(config, f)
            argv += ["--config", path]
        if tls:
            argv += ["--tls-listen", "127.0.0.1:0"]
        argv += args or []
        self.stderr = open(os.path.join(self.dir, "stderr"), "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.stderr)
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self.address = ""
        self.tls_address = ""
        want = ["listening on "] + (["tls listening on "] if tls else [])
        while want:
            try:
                line = self._lines.get(timeout=30)
            except queue.Empty:
                self.kill()
                raise RuntimeError("witmqd printed no 'listening on' in 30 s: " + self.log())
            if line is None:
                raise RuntimeError("witmqd exited (%s): %s" % (self.proc.wait(), self.log()))
            for prefix in list(want):
                if line.startswith(prefix):
                    value = line[len(prefix):].strip()
                    if prefix == "listening on ":
                        self.address = value
                    else:
                        self.tls_address = value
                    want.remove(prefix)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._lines.put(None)

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def tls_port(self) -> int:
        return int(self.tls_address.rpartition(":")[2])

    def log(self) -> str:
        self.stderr.flush()
        with open(os.path.join(self.dir, "stderr"), "rb") as f:
            return f.read()[-4000:].decode("utf-8", "replace")

    def kill(self) -> None:
        """SIGKILL: the server dies without a goaway."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


@pytest.fixture
def daemons(tmp_path: Any) -> Iterator[Any]:
    """A factory of daemons, all stopped at the end of the test."""
    started: List[Daemon] = []

    def start(args: Optional[List[str]] = None, config: Optional[Dict[str, Any]] = None,
              tls: bool = False) -> Daemon:
        d = Daemon(str(tmp_path), args, config, tls)
        started.append(d)
        return d
    yield start
    for d in started:
        d.stop()


@pytest.fixture
def daemon(daemons: Any) -> Daemon:
    return daemons()  # type: ignore[no-any-return]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Certificates:
    """A CA, a server certificate for 127.0.0.1 and localhost, a client certificate (CN
    ``witmq-test-client``) signed by the CA, and a second CA with a client certificate of its
    own."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self._serial = 0
        self._ca("ca", "witmq test CA")
        self._ca("other-ca", "another test CA")
        self._leaf("server", "ca", "localhost",
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        self._leaf("client", "ca", "witmq-test-client", "extendedKeyUsage=clientAuth\n")
        self._leaf("intruder", "other-ca", "intruder", "extendedKeyUsage=clientAuth\n")

    def pem(self, name: str) -> str:
        return os.path.join(self.dir, name + ".pem")

    def key(self, name: str) -> str:
        return os.path.join(self.dir, name + ".key")

    def server_flags(self) -> List[str]:
        return ["--set", "tls-cert-file=" + self.pem("server"),
                "--set", "tls-key-file=" + self.key("server")]

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.dir, check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _ca(self, name: str, cn: str) -> None:
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-days", "2", "-keyout", name + ".key", "-out", name + ".pem",
                      "-subj", "/CN=" + cn, "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def _leaf(self, name: str, ca: str, cn: str, extensions: str) -> None:
        with open(os.path.join(self.dir, name + ".ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n" + extensions)
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
        self._serial += 1
        self._openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey",
                      ca + ".key", "-set_serial", str(self._serial), "-days", "2", "-extfile",
                      name + ".ext", "-out", name + ".pem")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: Any) -> Certificates:
    return Certificates(str(tmp_path_factory.mktemp("certs")))

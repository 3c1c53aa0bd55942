"""Fixtures for the Kafka client compatibility tests: a real `wharf serve` process.

The broker binary is $WHARF_BIN (scripts/test sets it), else target/debug/wharf.
Each test module gets its own broker on free loopback ports and a temporary data
directory; tests that restart or kill the broker use the same data directory.
"""

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Wharf:
    """One broker process; start/stop/kill/restart keep its data directory and ports."""

    def __init__(self, data_dir: Path, log_dir: Path):
        self.bin = os.environ.get("WHARF_BIN") or str(ROOT / "target" / "debug" / "wharf")
        if not Path(self.bin).exists():
            raise RuntimeError(f"wharf binary {self.bin} not found: run scripts/test (or cargo build -p wharf-server)")
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.kafka_port = free_port()
        self.http_port = free_port()
        self.proc = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None, "already running"
        self.starts += 1
        log = open(self.log_dir / f"wharf-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [
                self.bin, "serve",
                "--data-dir", str(self.data_dir),
                "--kafka-addr", self.bootstrap,
                "--http-addr", f"127.0.0.1:{self.http_port}",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wharf exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"wharf did not become healthy in {timeout}s: {self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM, and wait for a clean exit."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        assert self.stop() == 0, self.log_tail()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.log_dir.glob("wharf-*.log"))
        if not logs:
            return "(no log)"
        text = logs[-1].read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@pytest.fixture(scope="module")
def wharf():
    with tempfile.TemporaryDirectory(prefix="wharf-compat-") as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        (tmp / "logs").mkdir()
        broker = Wharf(tmp / "data", tmp / "logs")
        broker.start()
        try:
            yield broker
        finally:
            # Never leave a broker behind, whatever the test did to it.
            try:
                broker.stop()
            except Exception:
                broker.kill()


@pytest.fixture
def topic_name():
    return f"compat-{uuid.uuid4().hex[:12]}"

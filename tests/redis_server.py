"""A real ``redis-server`` for the tests: started on a free port, stopped and restarted on it.

    server = RedisServer()      # installs redis-server with apt-get when it is missing
    server.start()              # returns once the server answers PING
    server.url                  # redis://127.0.0.1:<port>/0
    server.stop()               # an outage: nothing listens on the port any more
    server.start()              # the same port again, empty (nothing is saved)

``serve`` and ``fresh`` make fixtures of it: one server per test module, an empty database
for each test.
"""

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

INSTALL = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server"


def redis_binary() -> Optional[str]:
    """The path of ``redis-server``, installed with apt-get first when it is missing and
    apt-get exists; None when there is none."""
    found = shutil.which("redis-server")
    if found is None and shutil.which("apt-get"):
        subprocess.run(
            INSTALL, shell=True, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        found = shutil.which("redis-server")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process on a fixed port, without persistence."""

    def __init__(self, port: Optional[int] = None, binary: Optional[str] = None) -> None:
        self.binary = binary or redis_binary()
        if self.binary is None:
            raise RuntimeError(f"redis-server is not installed; install it with: {INSTALL}")
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.url = f"redis://{self.host}:{self.port}/0"
        self.process: Optional[subprocess.Popen] = None
        self._log: Optional[Path] = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def persistence(self) -> List[str]:
        """Options for what the server keeps on disk: nothing."""
        return ["--save", "", "--appendonly", "no"]

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Start the server (if it is not running) and wait until it answers PING."""
        if self.running:
            return self
        command = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", self.host,
            *self.persistence(),
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None:
                stdout = self.process.stdout
                output = stdout.read().decode(errors="replace") if stdout else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {output}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        """Whether the server answers PING (a raw RESP exchange, no client library)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Send one command and return the raw reply (for FLUSHALL and the like)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection((self.host, self.port), timeout=2) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536)

    def flush(self) -> None:
        self.command("FLUSHALL")

    def stop(self) -> None:
        """Stop the server and wait until the port is free again."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def restart(self) -> "RedisServer":
        self.stop()
        return self.start()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve() -> Iterator[RedisServer]:
    """The body of a fixture: a started server, stopped afterwards; the test is skipped where
    no redis-server can be installed.

        @pytest.fixture(scope="module")
        def redis_server() -> Iterator[RedisServer]:
            yield from serve()
    """
    if redis_binary() is None:
        pytest.skip("redis-server is not installed and cannot be installed here")
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def fresh(server: RedisServer) -> str:
    """The server's URL, with the server started again if a test stopped it and emptied."""
    server.start()
    server.flush()
    return server.url

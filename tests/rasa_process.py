"""Real ``rasa`` processes for end-to-end tests: training, serving, waiting, stopping."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
RASA = str(Path(sys.executable).with_name("rasa"))
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "SQLALCHEMY_SILENCE_UBER_WARNING": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train(out_dir: Path) -> Path:
    """Train the demo assistant with real ``rasa train``; return the model path."""
    subprocess.run(
        [
            RASA, "train",
            "--config", "demo/config.yml",
            "--domain", "demo/domain.yml",
            "--data", "demo/data",
            "--out", str(out_dir),
            "--fixed-model-name", "demo",
        ],
        cwd=ROOT, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        timeout=600,
    )  # fmt: skip
    return out_dir / "demo.tar.gz"


def run_args(model: Path, credentials: Path, port: int, endpoints: Optional[Path]) -> list:
    args = [RASA, "run", "--model", str(model), "--credentials", str(credentials)]
    args += ["--port", str(port), "--enable-api", "--interface", "127.0.0.1"]
    if endpoints:
        args += ["--endpoints", str(endpoints)]
    return args


class RasaServer:
    """A ``rasa run --credentials ...`` process, started at once and waited for on first use."""

    def __init__(
        self,
        model: Path,
        credentials: Path,
        log: Path,
        endpoints: Optional[Path] = None,
        env: Optional[Dict[str, str]] = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.log = log
        # extra_args: more of `rasa run`'s options, e.g. --logging-config-file FILE.
        self._args = run_args(model, credentials, self.port, endpoints) + list(extra_args)
        self._env = {**ENV, **(env or {})}
        self._start()

    def _start(self) -> None:
        self._log_file = self.log.open("ab")
        self.process = subprocess.Popen(
            self._args, cwd=ROOT, env=self._env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        self._ready = False

    def kill_and_restart(self) -> "RasaServer":
        """SIGKILL, as a crash would, then start the same command again."""
        self.process.kill()
        self.process.wait()
        self._log_file.close()
        self._start()
        return self.wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 240) -> "RasaServer":
        deadline = time.monotonic() + timeout
        while not self._ready:
            if self.process.poll() is not None:
                raise RuntimeError(f"rasa run exited early:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"rasa run not ready:\n{self.log_text()[-3000:]}")
            with contextlib.suppress(OSError):
                self._ready = request(self.url + "/status")[0] == 200  # 409 until loaded
            time.sleep(0.3)
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def post(
        self, path: str, body: Any, content_type: str = "application/json"
    ) -> Tuple[int, Dict[str, str], bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return request(self.url + path, data, {"Content-Type": content_type})

    def send(
        self,
        path: str,
        body: Optional[bytes],
        headers: Dict[str, str],
        method: str = "POST",
    ) -> Tuple[int, Dict[str, str], bytes]:
        return request(self.url + path, body, headers, method)

    def get_json(self, path: str) -> Any:
        status, _, body = request(self.url + path)
        assert status == 200, body
        return json.loads(body)

    def tracker(self, sender: str) -> Dict[str, Any]:
        return self.get_json(f"/conversations/{sender}/tracker")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_file.close()


def request(
    url: str,
    data: Optional[bytes] = None,
    headers: Optional[Dict[str, str]] = None,
    method: Optional[str] = None,
) -> Tuple[int, Dict[str, str], bytes]:
    """One real HTTP request; returns status, headers and body, also for 4xx/5xx."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def user_events(tracker: Dict[str, Any]) -> list:
    return [event for event in tracker["events"] if event["event"] == "user"]

"""Memory: RSS of a real ``rasa run`` (the demo assistant) with one and with ten generic channels.

    .venv/bin/python bench/memory.py

Each server is sent one message per channel first, so that every channel has handled a request.
"""

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PYTHON, ROOT, free_port, wait_for  # noqa: E402


def rss_of(channels: int) -> int:
    """Resident memory in KiB of ``rasa run`` serving ``channels`` generic channels."""
    folder = Path(tempfile.mkdtemp())
    credentials = folder / "credentials.yml"
    credentials.write_text(
        "".join(
            f"generic_connector.channels.c{n}:\n  mapping: mappings/rest.yml\n  name: rest{n}\n"
            for n in range(channels)
        )
    )
    port = free_port()
    rasa = [str(Path(PYTHON).with_name("rasa")), "run", "--model", "demo/models/demo.tar.gz"]
    rasa += ["--credentials", str(credentials), "--port", str(port), "--enable-api"]
    server = subprocess.Popen(rasa, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/status")
        for n in range(channels):
            body = json.dumps({"sender": f"m{n}", "message": "hello"}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/webhooks/rest{n}/webhook", body, method="POST"
            )
            urllib.request.urlopen(request, timeout=30).read()
        time.sleep(1)
        status = Path(f"/proc/{server.pid}/status").read_text()
        return int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
        )
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    if not (ROOT / "demo/models/demo.tar.gz").exists():
        raise SystemExit("train the demo first: make demo (or bench/run.py --rasa)")
    one, ten = rss_of(1), rss_of(10)
    print(f"rasa run RSS with 1 generic channel:  {one / 1024:.1f} MiB")
    growth = (ten / one - 1) * 100
    print(f"rasa run RSS with 10 generic channels: {ten / 1024:.1f} MiB ({growth:+.1f} %)")


if __name__ == "__main__":
    main()

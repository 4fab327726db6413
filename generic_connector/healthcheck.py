"""``generic-connector-healthcheck``: exit status 0 when the assistant is healthy, 1 when not.

    generic-connector-healthcheck           liveness: rasa run answers GET /
    generic-connector-healthcheck --ready   readiness: the model is loaded (GET /status; needs
                                            rasa run --enable-api; the token, when rasa run has
                                            --auth-token, from RASA_AUTH_TOKEN or RASA_TOKEN,
                                            in the entry point's order)

The server is --url, else HEALTHCHECK_URL, else http://127.0.0.1:$PORT (PORT default 5005).

A console script of the package, so that the image's HEALTHCHECK, docker-compose.yml and a
Kubernetes exec probe run the installed command. It imports the standard library only, and
none of the package (``import generic_connector`` imports nothing else either): a probe that
runs every few seconds costs a Python start-up, not the commands' imports (about 1 s for
``generic_connector.cli``), which is why it is beside the core modules and not in ``cli``.
"""

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import List, Optional, Tuple


def status_of(url: str, timeout: float) -> Tuple[Optional[int], str]:
    """The HTTP status of GET url (None when nothing answers) and a few words on it."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, "ok"
    except urllib.error.HTTPError as error:
        return error.code, error.reason or "error"
    except (OSError, ValueError) as error:
        return None, str(getattr(error, "reason", error))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="generic-connector-healthcheck")
    default = os.environ.get("HEALTHCHECK_URL") or (
        f"http://127.0.0.1:{os.environ.get('PORT', '5005')}"
    )
    parser.add_argument("--url", default=default, help="the server (default %(default)s)")
    parser.add_argument("--ready", action="store_true", help="the model must be loaded")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")

    status, reason = status_of(base + "/", args.timeout)
    if status != 200:
        print(f"not alive: GET {base}/ gave {status or reason}", file=sys.stderr)
        return 1
    if not args.ready:
        print(f"alive: {base}/")
        return 0
    # The entry point passes RASA_AUTH_TOKEN, else RASA_TOKEN, to rasa run --auth-token.
    token = os.environ.get("RASA_AUTH_TOKEN") or os.environ.get("RASA_TOKEN")
    query = "?" + urllib.parse.urlencode({"token": token}) if token else ""
    status, reason = status_of(f"{base}/status{query}", args.timeout)
    if status == 200:
        print(f"ready: {base} has its model loaded")
        return 0
    if status == 404:  # rasa run without --enable-api: the server answering is all there is
        print(f"alive, /status not served (rasa run without --enable-api): {base}/")
        return 0
    words = {409: "the model is not loaded yet", 401: "unauthorized: set RASA_AUTH_TOKEN"}
    detail = words.get(status or 0, reason)
    print(f"not ready: {base}/status gave {status}: {detail}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

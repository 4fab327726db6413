#!/usr/bin/env python3
"""Health check of the assistant: exit status 0 when healthy, 1 when not.

    generic-connector-healthcheck           liveness: rasa run answers GET /
    generic-connector-healthcheck --ready   readiness: the model is loaded (GET /status; needs
                                            rasa run --enable-api; the token, when rasa run has
                                            --auth-token, from RASA_TOKEN or RASA_AUTH_TOKEN)

The server is --url, else HEALTHCHECK_URL, else http://127.0.0.1:$PORT (PORT default 5005).
Standard library only: it runs in the container image and in Kubernetes exec probes alike.
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
    token = os.environ.get("RASA_TOKEN") or os.environ.get("RASA_AUTH_TOKEN")
    query = "?" + urllib.parse.urlencode({"token": token}) if token else ""
    status, reason = status_of(f"{base}/status{query}", args.timeout)
    if status == 200:
        print(f"ready: {base} has its model loaded")
        return 0
    if status == 404:  # rasa run without --enable-api: the server answering is all there is
        print(f"alive, /status not served (rasa run without --enable-api): {base}/")
        return 0
    words = {409: "the model is not loaded yet", 401: "unauthorized: set RASA_TOKEN"}
    print(f"not ready: {base}/status gave {status}: {words.get(status, reason)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

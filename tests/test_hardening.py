"""Hostile requests against a real ``rasa run``: sizes, slow bodies, crowds, bad text.

The main server's ``tight`` channel has ``limits: {max_body: 1000, read_timeout: 2,
max_concurrent: 3}``; ``fragile`` answers with a template that fails on some requests.
"""

import json
import socket
import time
from typing import List, Tuple

import pytest

from tests.rasa_process import RasaServer, user_events

pytestmark = pytest.mark.e2e


def connect(rasa: RasaServer, timeout: float = 30) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", rasa.port), timeout=timeout)
    return sock


def head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def answer_of(sock: socket.socket) -> Tuple[int, bytes]:
    """Status and body of the answer on ``sock`` (read until the server closes or is done)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in header.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(header.split(b" ")[1]), body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return isinstance(sock, socket.socket)


def test_a_declared_size_over_the_limit_is_refused_before_the_body_is_sent(
    rasa: RasaServer,
) -> None:
    with connect(rasa) as sock:
        sock.sendall(head("/webhooks/tight/webhook", 20_000_000))  # no body follows
        status, body = answer_of(sock)
    assert status == 413
    assert json.loads(body) == {"error": "request body is larger than 1000 bytes"}


def test_a_chunked_body_over_the_limit_is_cut_off(rasa: RasaServer) -> None:
    chunk = b"x" * 600
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    request = (
        b"POST /webhooks/tight/webhook HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with connect(rasa) as sock:
        sock.sendall(request + chunked)
        status, body = answer_of(sock)
    assert status == 413
    assert json.loads(body) == {"error": "request body is larger than 1000 bytes"}


def test_a_body_that_arrives_too_slowly_is_cut_off_and_the_connection_closed(
    rasa: RasaServer,
) -> None:
    with connect(rasa) as sock:
        sock.sendall(head("/webhooks/tight/webhook", 100) + b'{"sender": ')
        started = time.monotonic()
        status, body = answer_of(sock)  # the rest never comes
        waited = time.monotonic() - started
        assert closed_by_server(sock)
    assert status == 408
    assert json.loads(body) == {"error": "the request body did not arrive within 2 s"}
    assert 1.5 < waited < 20


def test_slow_clients_beyond_the_cap_are_turned_away_and_others_still_served(
    rasa: RasaServer,
) -> None:
    slow: List[socket.socket] = []
    try:
        for _ in range(3):  # max_concurrent: 3, all held by bodies that never finish
            sock = connect(rasa)
            sock.sendall(head("/webhooks/tight/webhook", 100) + b"{")
            slow.append(sock)
        deadline = time.monotonic() + 10
        while True:  # until the server has taken all three in
            status, headers, body = rasa.post(
                "/webhooks/tight/webhook", {"sender": "s", "message": "hi"}
            )
            if status != 200 or time.monotonic() > deadline:
                break
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert json.loads(body) == {"error": "too many requests at once; retry later"}
        # Another channel of the same server is not held up.
        assert rasa.post("/webhooks/restlike/webhook", {"sender": "s", "message": "hi"})[0] == 200
        for sock in slow:
            assert answer_of(sock)[0] == 408
    finally:
        for sock in slow:
            sock.close()
    assert rasa.post("/webhooks/tight/webhook", {"sender": "cap-ok", "message": "hi"})[0] == 200


def test_a_lone_surrogate_is_refused_and_an_sql_tracker_store_survives_it(
    durable_rasa: RasaServer,
) -> None:
    body = b'{"sender": "\\ud800", "message": "hi"}'
    status, _, answer = durable_rasa.post("/webhooks/restlike/webhook", body)
    assert status == 400
    assert json.loads(answer) == {
        "error": "request body holds text that is not valid Unicode (a lone surrogate)"
    }
    text = b'{"sender": "surrogate-text", "message": "hi \\udc00"}'
    assert durable_rasa.post("/webhooks/restlike/webhook", text)[0] == 400
    # The raw UTF-8 bytes of a surrogate (ED A0 80), not its escape: 34 bytes that stopped
    # the whole process when they reached the SQL tracker store.
    raw = b'{"sender":"\xed\xa0\x80","message":"hi"}'
    for path in ("/webhooks/restlike/webhook", "/webhooks/myio/webhook"):
        status, _, answer = durable_rasa.post(path, raw)
        assert (status, json.loads(answer)) == (
            400,
            {"error": "request body is not valid UTF-8 (at byte 11): invalid continuation byte"},
        )
    assert durable_rasa.process.poll() is None
    ok = durable_rasa.post("/webhooks/restlike/webhook", {"sender": "after-sur", "message": "hi"})
    assert ok[0] == 200  # the server is still there
    assert user_events(durable_rasa.tracker("after-sur"))[0]["text"] == "hi"


def test_a_million_digit_sender_is_refused_at_once(rasa: RasaServer) -> None:
    body = b'{"sender": ' + b"9" * 1_000_000 + b', "message": "hi"}'  # within 1 MiB
    started = time.monotonic()
    status, _, answer = rasa.post("/webhooks/restlike/webhook", body)
    assert status == 400
    assert json.loads(answer) == {
        "error": "request body is not valid JSON: an integer has more than 20 digits"
    }
    assert time.monotonic() - started < 10  # converting it would take seconds


def test_a_failing_answer_template_acknowledges_the_handled_message_once(
    rasa: RasaServer,
) -> None:
    body = json.dumps({"sender": "frag-1", "message": "hi", "separator": ""}).encode()
    status, headers, answer = rasa.send(
        "/webhooks/fragile/webhook",
        body,
        {"Content-Type": "application/json", "X-Request-ID": "frag-req-1"},
    )
    # Rasa handled it: a 5xx would make the platform send it again, a new turn each time.
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["X-Request-ID"] == "frag-req-1"
    assert json.loads(answer) == {"error": "the answer could not be rendered", "handled": True}
    assert [e["text"] for e in user_events(rasa.tracker("frag-1"))] == ["hi"]
    log = rasa.log_text()
    assert log.count("Channel fragile: request frag-req-1: the answer could not be rendered") == 1
    assert "Traceback" not in log.split("frag-req-1")[1][:2000]
    fine = json.dumps({"sender": "frag-2", "message": "a b", "separator": " "}).encode()
    assert json.loads(rasa.send("/webhooks/fragile/webhook", fine, {})[2]) == ["a", "b"]


def test_a_chunked_body_with_a_content_length_is_refused(rasa: RasaServer) -> None:
    body = b'{"sender": "smuggler", "message": "hi"}'
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    with connect(rasa) as sock:
        sock.sendall(
            head("/webhooks/restlike/webhook", len(chunked), "Transfer-Encoding: chunked\r\n")
            + chunked
        )
        status, answer = answer_of(sock)
    assert (status, json.loads(answer)) == (
        400,
        {"error": "a request must not have both Transfer-Encoding and Content-Length"},
    )
    assert user_events(rasa.tracker("smuggler")) == []


def test_a_new_request_takes_the_place_of_the_oldest_slow_body(rasa: RasaServer) -> None:
    # Slow bodies holding every place cannot keep the channel at 503: once one has waited
    # longer than a second, a new request takes its place.
    slow: List[socket.socket] = []
    try:
        for _ in range(3):  # max_concurrent: 3
            sock = connect(rasa)
            sock.sendall(head("/webhooks/tight/webhook", 100) + b"{")
            slow.append(sock)
        deadline = time.monotonic() + 10
        while rasa.post("/webhooks/tight/webhook", {"sender": "s", "message": "hi"})[0] == 200:
            assert time.monotonic() < deadline  # until the server has taken all three in
        time.sleep(1.2)
        status, _, _ = rasa.post("/webhooks/tight/webhook", {"sender": "evictor", "message": "hi"})
        assert status == 200
        errors = sorted(json.loads(answer_of(sock)[1])["error"] for sock in slow)
    finally:
        for sock in slow:
            sock.close()
    assert errors == [
        "the request body did not arrive within 2 s",
        "the request body did not arrive within 2 s",
        "the request body was too slow while others waited",
    ]

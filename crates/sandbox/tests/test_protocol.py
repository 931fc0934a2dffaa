"""The warm-server protocol's golden fixtures (../protocol/*.json) against warm_server.py.

Run with the python3 that runs the server in the images: `/usr/bin/python3 -m pytest` here.
"""

import importlib.util
import json
import os
import pathlib
import time

import pytest

CRATE = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("warm_server", CRATE / "src" / "warm_server.py")
ws = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ws)

REQUESTS = json.loads((CRATE / "protocol" / "requests.json").read_text())["cases"]
FRAMES = json.loads((CRATE / "protocol" / "frames.json").read_text())["frames"]
FROM_PYTHON = [f for f in FRAMES if "python" in f["from"]]


def blobs_of(f):
    return [b.encode() for b in f["blobs"]]


def without_blobs(header):
    return {k: v for k, v in header.items() if k != "blobs"}


def piped(data):
    """A read fd that yields `data`, then end of file."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


def test_the_server_is_imported_without_serving():
    assert not ws.MAIN
    assert not hasattr(ws, "PROTO_IN")


@pytest.mark.parametrize("case", REQUESTS, ids=lambda c: c["name"])
def test_requests_are_accepted_or_refused_as_the_fixtures_say(case):
    assert ws.invalid(case["request"]) == case["python"]


def test_request_lines_parse_into_the_fixtures(monkeypatch):
    lines = b"".join(json.dumps(c["request"]).encode() + b"\n" for c in REQUESTS)
    monkeypatch.setattr(ws, "PROTO_IN", piped(lines), raising=False)
    buf = b""
    for case in REQUESTS:
        req, buf = ws.read_request(buf)
        assert req == case["request"]
    assert ws.read_request(buf) == (None, b"")
    os.close(ws.PROTO_IN)


def test_an_unreadable_request_is_the_fixtures_error(monkeypatch):
    monkeypatch.setattr(ws, "PROTO_IN", piped(b"nope\n"), raising=False)
    with pytest.raises(ValueError) as e:
        ws.read_request(b"")
    os.close(ws.PROTO_IN)
    want = next(f for f in FRAMES if f["name"] == "error-unreadable-request")
    assert f"bad request: {e.value}" == want["header"]["error"]


def test_a_refused_request_is_the_fixtures_error():
    bad = next(c for c in REQUESTS if c["name"] == "bad-fields")
    want = next(f for f in FRAMES if f["name"] == "error-bad-request")
    assert want["header"]["id"] == bad["request"]["id"]
    assert want["header"]["error"] == f"bad request: {ws.invalid(bad['request'])}"


@pytest.mark.parametrize("f", FROM_PYTHON, ids=lambda f: f["name"])
def test_frames_are_written_as_the_fixtures(f):
    data = ws.frame(without_blobs(f["header"]), blobs_of(f))
    line, _, rest = data.partition(b"\n")
    assert json.loads(line) == f["header"]
    assert rest == b"".join(blobs_of(f))
    # The collector's frames are read back by the server's own reader.
    fd = piped(data)
    try:
        assert ws.read_frame(fd, time.monotonic() + 5) == (f["header"], blobs_of(f))
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "f", [f for f in FROM_PYTHON if "inputs" in f], ids=lambda f: f["name"]
)
def test_replies_are_built_as_the_fixtures(f):
    inputs = dict(f["inputs"])
    code, sig = inputs.pop("exit"), inputs.pop("signal")
    # A wait status as waitpid reports it: the exit code in the high byte, or the signal.
    status = code << 8 if code is not None else sig
    header = ws.reply_header(f["header"]["id"], status, **inputs)
    assert header == without_blobs(f["header"])

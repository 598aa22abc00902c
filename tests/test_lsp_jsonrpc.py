"""`cnndsl lsp` spoken to byte by byte: malformed JSON-RPC and a cut-off stream never kill or hang it."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from typing import Any

import pytest
from lsp_support import ROOT, TIMEOUT

SMALL = "network N(image: [3, 32, 32]) {\n    conv(8, 3) -> relu\n}\n"


class RawServer:
    """The server as a subprocess spoken to byte by byte, for messages no well-behaved client would send."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cnndsl", "lsp"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            assert length is not None
            self.messages.put(json.loads(stream.read(length)))

    def send_bytes(self, body: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_bytes(json.dumps(message).encode())

    def response(self, request_id: int) -> dict[str, Any]:
        """The response to a request (notifications such as logs are skipped)."""
        while True:
            message = self.messages.get(timeout=TIMEOUT)
            if message.get("id") == request_id and "method" not in message:
                return message

    def close(self) -> int:
        self.send({"jsonrpc": "2.0", "id": 999, "method": "shutdown"})
        self.response(999)
        self.send({"jsonrpc": "2.0", "method": "exit"})
        try:
            return self.process.wait(timeout=TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def _initialize(server: RawServer, request_id: int = 1) -> dict[str, Any]:
    server.send(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "initialize",
            "params": {"capabilities": {}, "processId": None},
        }
    )
    return server.response(request_id)


def test_malformed_json_rpc_is_survived() -> None:
    server = RawServer()
    try:
        server.send_bytes(b"{this is not json")
        server.send_bytes(b"[1, 2, 3]")
        server.send_bytes(b'"a string"')
        server.send_bytes(b'{"jsonrpc": "2.0", "id": 7, "method": 12}')
        server.send_bytes(b'{"jsonrpc": "2.0", "id": 8, "method": "initialize", "params": "nonsense"}')
        server.send_bytes('{"jsonrpc": "2.0", "method": "\u0000\ud800"}'.encode("utf-8", "surrogatepass"))
        server.send_bytes(b"\xff\xfe\x00 not utf-8")
        reply = _initialize(server, 1)
        assert "capabilities" in reply["result"]
        assert reply["result"]["capabilities"]["hoverProvider"]
        server.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        # After all that it still checks a document and answers about it.
        server.send(
            {
                "jsonrpc": "2.0",
                "method": "textDocument/didOpen",
                "params": {
                    "textDocument": {
                        "uri": "untitled:raw.cnn",
                        "languageId": "cnn",
                        "version": 1,
                        "text": SMALL,
                    }
                },
            }
        )
        server.send(
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "textDocument/hover",
                "params": {
                    "textDocument": {"uri": "untitled:raw.cnn"},
                    "position": {"line": 1, "character": 6},
                },
            }
        )
        hover = server.response(2)
        assert "[8, 30, 30]" in hover["result"]["contents"]["value"]
        # A request with wrong parameters gets an error answer, not silence.
        server.send({"jsonrpc": "2.0", "id": 3, "method": "textDocument/hover", "params": {"position": "x"}})
        assert "error" in server.response(3)
        assert server.close() == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()


def test_end_of_input_stops_the_server() -> None:
    server = RawServer()
    assert server.process.stdin is not None
    server.process.stdin.write(b'Content-Length: 100\r\n\r\n{"jsonrpc"')  # cut off mid-message
    server.process.stdin.close()
    try:
        server.process.wait(timeout=TIMEOUT)
    finally:
        if server.process.poll() is None:
            server.process.kill()
            pytest.fail("the server did not stop when its input ended")

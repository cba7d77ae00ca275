"""A stand-in for an OpenAI-compatible chat server (vLLM's API) on loopback, for tests.

It records every request and answers with text that respects a request's structured-output
regex, with canned text, or misbehaves on purpose (delay, HTTP error, malformed JSON).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[dict[str, Any]], str]

CANNED_CHUNK = "[[1.5, 0.0, -2.0, 1], [0.0, 0.0, 0.0, 0]]"


def regex_answer(body: dict[str, Any]) -> str:
    """A valid answer for the request: a known string that fullmatches its regex, else prose."""
    regex = (body.get("structured_outputs") or {}).get("regex") or body.get("guided_regex")
    if regex is None:
        return "Move forward and down toward the block, then close the gripper."
    for candidate in (CANNED_CHUNK, "advance", "1. Grasp the block\n2. Lift the block"):
        if re.fullmatch(regex, candidate):
            return candidate
    raise ValueError(f"stand-in has no answer for regex {regex[:60]!r}")


class StandInServer:
    """Serves POST /v1/chat/completions on 127.0.0.1 at an ephemeral port, in a thread."""

    def __init__(self, answer: Answer = regex_answer) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.delay_s = 0.0
        self.status = 200
        self.malformed = False
        self.finish_reason = "stop"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append(dict(self.headers))
                time.sleep(server.delay_s)
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                if server.status != 200:
                    return self._send(server.status, b'{"error": "stand-in failure"}')
                if server.malformed:
                    return self._send(200, b'{"choices": [')
                text = server.answer(body)
                reply = {
                    "id": "standin",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": server.finish_reason}],
                    "usage": {"prompt_tokens": 300, "completion_tokens": len(text) // 3 + 1,
                              "prompt_tokens_details": {"cached_tokens": 0}},
                }
                self._send(200, json.dumps(reply).encode())

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> StandInServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

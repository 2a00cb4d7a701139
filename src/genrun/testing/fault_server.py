"""A small OpenAI-compatible server on 127.0.0.1 that fails in chosen ways, for fault tests.

The behaviour of a request depends on its prompt, "<kind> <n>", and on how many times that
prompt was seen: e.g. "rate 3" answers 429 with Retry-After once, then succeeds.
"""

from __future__ import annotations

import json
import random
import select
import socket
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RETRY_AFTER_S = 0.3
SLOW_S = 1.5


class FaultServer:
    def __init__(self, status_for_all: int | None = None, work_s: float = 0.05,
                 reply: str | list[str] | None = None, seed: int = 0, port: int = 0,
                 capacity: int | None = None) -> None:
        self.status_for_all = status_for_all
        # A model that always gives this answer (scoring tests), or one of these at random, as
        # many as the request's `n`; None: "answer to <prompt>", one choice whatever `n` asks.
        self.reply = reply
        self.random = random.Random(seed)
        self.work_s = work_s  # how long a normal answer takes, as a model would
        # At most this many answers worked on at once (an engine's batch), the others queue: a
        # server that is the bottleneck, whatever the client's concurrency. None: no limit.
        self.capacity = threading.Semaphore(capacity) if capacity else None
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.attempts: dict[str, list[float]] = defaultdict(list)  # prompt -> arrival times
        self.auth_headers: set[str] = set()
        self.bodies: list[dict] = []
        self.killed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                if server.killed:  # as a killed process would: no answer, the connection gone
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if "prompt" in body:  # the completions endpoint: answered as a server without echo would
                    with server.lock:
                        server.bodies.append(body)
                    return send(self, 200, text_completion(body))
                content = body["messages"][-1]["content"]
                if isinstance(content, list):  # multimodal: the text parts make the prompt
                    content = " ".join(p["text"] for p in content if p.get("type") == "text")
                prompt = content
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.attempts[prompt].append(time.monotonic())
                    server.auth_headers.add(self.headers.get("Authorization", ""))
                    server.bodies.append(body)
                    attempt = len(server.attempts[prompt])
                try:
                    server.respond(self, body, prompt, attempt)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # clients that time out or hang up are part of the test

        self.httpd = QuietServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self.killed:
            self.kill()

    def kill(self) -> None:
        """Stop as a killed server would: new connections refused, open ones hung up on. A
        FaultServer(port=this one's port) brings it back."""
        self.killed = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def respond(self, handler: BaseHTTPRequestHandler, body: dict, prompt: str, attempt: int) -> None:
        kind = prompt.split()[0]
        if self.status_for_all:
            return send(handler, self.status_for_all, {"error": {"message": "invalid api key"}})
        if kind == "poison":
            return send(handler, 400, {"error": {"message": "prompt rejected"}})
        if kind == "rate" and attempt == 1:
            return send(handler, 429, {"error": {"message": "slow down"}}, {"Retry-After": str(RETRY_AFTER_S)})
        if kind == "busy" and attempt == 1:  # overloaded, with no hint of when to come back
            return send(handler, 429, {"error": {"message": "too many requests"}})
        if kind == "flaky" and attempt <= 2:
            return send(handler, 500, {"error": {"message": "internal"}})
        if kind == "broken":
            return send(handler, 503, {"error": {"message": "always down"}})
        if kind == "nullcontent":  # the reasoning used up max_tokens: no answer at all
            reply = completion(body, None)
            reply["choices"][0]["finish_reason"] = "length"
            return send(handler, 200, reply)
        if kind == "cut":  # an answer that stopped at max_tokens
            reply = completion(body, f"answer to {prompt}")
            reply["choices"][0]["finish_reason"] = "length"
            return send(handler, 200, reply)
        if kind == "errorbody" and attempt == 1:  # a 200 that carries an error
            return send(handler, 200, {"error": {"message": "upstream overloaded"}})
        if kind == "badjson" and attempt == 1:  # a 200 whose body is cut short
            return send_raw(handler, 200, b'{"id": "cmpl-1", "choices": [')
        if kind == "trickle":  # a 200 whose body comes a byte a second, and never ends in time
            return trickle(handler, json.dumps(completion(body, "too late")).encode())
        if kind == "html":  # a proxy's error page, with status 200
            return send_raw(handler, 200, b"<html><body>Bad gateway</body></html>", {"Content-Type": "text/html"})
        if kind == "intcontent":  # a 200 whose content is not text
            reply = completion(body, "x")
            reply["choices"][0]["message"]["content"] = 5
            return send(handler, 200, reply)
        if kind == "nochoicemessage":
            reply = completion(body, "x")
            reply["choices"] = [{"index": 0, "finish_reason": "stop"}]
            return send(handler, 200, reply)
        if kind == "slow" and attempt == 1 and not wait_unless_hung_up(handler, SLOW_S):
            return
        if kind == "drop" and attempt == 1:
            handler.close_connection = True
            handler.connection.shutdown(2)  # hang up without an answer
            return
        if self.work_s and self.capacity is not None:
            with self.capacity:
                time.sleep(self.work_s)
        elif self.work_s:
            time.sleep(self.work_s)  # so requests overlap
        if isinstance(self.reply, list):
            with self.lock:
                texts = [self.random.choice(self.reply) for _ in range(body.get("n") or 1)]
            return send(handler, 200, completion(body, *texts))
        send(handler, 200, completion(body, self.reply if self.reply is not None else f"answer to {prompt}"))


def wait_unless_hung_up(handler: BaseHTTPRequestHandler, seconds: float) -> bool:
    """Sleep, but end the request early when the client hangs up (as vLLM aborts it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([handler.connection], [], [], 0.01)
        if readable and handler.connection.recv(1, socket.MSG_PEEK) == b"":
            handler.close_connection = True
            return False
    return True


def completion(body: dict, *texts: str | None) -> dict:
    return {
        "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
        "choices": [{"index": i, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text, "reasoning_content": "thought about it"}}
                    for i, text in enumerate(texts)],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3 * len(texts), "total_tokens": 7 + 3 * len(texts)},
    }


def text_completion(body: dict) -> dict:
    """A completions-endpoint answer for each prompt, ignoring echo and logprobs (as servers
    that cannot return a prompt's log-probabilities do)."""
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    return {"id": "cmpl-2", "object": "text_completion", "created": 0, "model": body["model"],
            "choices": [{"index": i, "text": " more", "logprobs": None, "finish_reason": "length"}
                        for i in range(len(prompts))],
            "usage": {"prompt_tokens": 7, "completion_tokens": len(prompts), "total_tokens": 7 + len(prompts)}}


def trickle(handler: BaseHTTPRequestHandler, data: bytes, every_s: float = 1.0) -> None:
    """Headers at once, then the body one byte a second (until the client hangs up)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    try:
        for byte in data:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every_s)
    except OSError:
        handler.close_connection = True


def send(handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
    send_raw(handler, status, json.dumps(payload).encode(), headers)


def send_raw(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict | None = None) -> None:
    handler.send_response(status)
    headers = dict(headers or {})
    handler.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
    handler.send_header("Content-Length", str(len(data)))
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)

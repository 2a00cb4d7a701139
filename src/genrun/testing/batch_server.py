"""The OpenAI Files and Batches endpoints on 127.0.0.1, for testing backend.batch=true.

A batch's requests are run one by one against an upstream chat-completions server (the
fault server, or vLLM's own), the way OpenAI runs them: answers go to the output file,
requests that failed to the error file. `hold_s` keeps every batch in progress at least
that long, so a test can stop genrun mid-poll.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from genrun.testing.fault_server import send, send_raw


class BatchServer:
    def __init__(self, upstream: str, hold_s: float = 0.0, end_status: str = "completed") -> None:
        self.upstream = upstream.rstrip("/")
        self.hold_s = hold_s
        self.end_status = end_status  # "expired" or "failed": how every batch ends (after running it)
        self.files: dict[str, tuple[str, bytes]] = {}  # id -> (filename, content)
        self.batches: dict[str, dict] = {}
        self.retrieves = 0
        self.ids = itertools.count(1)
        self.lock = threading.RLock()  # store() is called with it held
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/files":
                    return send(self, 200, server.upload(self.headers["Content-Type"], data))
                if self.path == "/v1/batches":
                    return send(self, 200, server.create(json.loads(data)))
                send(self, 404, {"error": {"message": f"no route {self.path}"}})

            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")  # v1 batches ID | v1 files ID content
                if parts[1:2] == ["batches"] and len(parts) == 3 and parts[2] in server.batches:
                    with server.lock:
                        server.retrieves += 1
                        return send(self, 200, dict(server.batches[parts[2]]))
                if parts[1:2] == ["files"] and len(parts) == 4 and parts[2] in server.files:
                    return send_raw(self, 200, server.files[parts[2]][1], {"Content-Type": "application/jsonl"})
                send(self, 404, {"error": {"message": f"no such object: {self.path}"}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> BatchServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def upload(self, content_type: str, data: bytes) -> dict:
        form = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + data,
                                        policy=email.policy.HTTP)
        part = next(p for p in form.iter_parts() if p.get_param("name", header="content-disposition") == "file")
        file_id = self.store(part.get_filename() or "upload.jsonl", bytes(part.get_payload(decode=True)))
        return {"id": file_id, "object": "file", "bytes": len(self.files[file_id][1]), "created_at": int(time.time()),
                "filename": self.files[file_id][0], "purpose": "batch", "status": "processed"}

    def store(self, filename: str, content: bytes) -> str:
        with self.lock:
            file_id = f"file-{next(self.ids)}"
            self.files[file_id] = (filename, content)
        return file_id

    def create(self, request: dict) -> dict:
        lines = [json.loads(line) for line in self.files[request["input_file_id"]][1].decode().splitlines() if line]
        with self.lock:
            batch_id = f"batch_{next(self.ids)}"
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": request["endpoint"], "status": "validating",
                "input_file_id": request["input_file_id"], "completion_window": request["completion_window"],
                "created_at": int(time.time()), "output_file_id": None, "error_file_id": None, "errors": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            }
        threading.Thread(target=self.execute, args=(batch_id, lines), daemon=True).start()
        return dict(self.batches[batch_id])

    def execute(self, batch_id: str, lines: list[dict]) -> None:
        started = time.monotonic()
        batch = self.batches[batch_id]
        batch["status"] = "in_progress"
        output: list[str] = []
        errors: list[str] = []
        for line in lines:
            status, body = self.forward(line["body"], line.get("url", "/v1/chat/completions"))
            result = {"id": f"batch_req_{next(self.ids)}", "custom_id": line["custom_id"],
                      "response": {"status_code": status, "request_id": f"req_{next(self.ids)}", "body": body},
                      "error": None}
            (output if status == 200 else errors).append(json.dumps(result) + "\n")
            with self.lock:
                batch["request_counts"]["completed" if status == 200 else "failed"] += 1
        time.sleep(max(self.hold_s - (time.monotonic() - started), 0))
        with self.lock:
            if output:
                batch["output_file_id"] = self.store(f"{batch_id}_output.jsonl", "".join(output).encode())
            if errors:
                batch["error_file_id"] = self.store(f"{batch_id}_errors.jsonl", "".join(errors).encode())
            batch["status"] = self.end_status
            if self.end_status == "failed":
                failure = {"code": "invalid_request", "message": "the test said so"}
                batch["errors"] = {"object": "list", "data": [failure]}

    def forward(self, body: dict, url: str = "/v1/chat/completions") -> tuple[int, dict]:
        path = url.removeprefix("/v1")  # the upstream's base URL ends in /v1
        request = urllib.request.Request(f"{self.upstream}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

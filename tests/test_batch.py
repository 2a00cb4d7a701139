"""OpenAI Batch API files: batch.export writes what the online backend would send, batch.results
reads a Batch output file back as records, and backend.batch=true submits, polls and collects
a batch against a Files/Batches server on 127.0.0.1, surviving a restart mid-poll."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import VLLM_CPU, read_jsonl, run_cli, write_jsonl
from genrun.testing.batch_server import BatchServer
from genrun.testing.fault_server import FaultServer


def openai_args(url: str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url={url}", "backend.model_name=fake", "backend.retries=0",
            "dataset=default", f"dataset.path={data}", "dataset.fields.reference=ref", f"hydra.run.dir={out}", *extra]


def test_an_exported_file_holds_exactly_the_online_requests_and_its_results_read_back(tmp_path: Path) -> None:
    rows = [{"prompt": f"ok {i}", "ref": f"answer to ok {i}"} for i in range(6)] + [{"prompt": "poison 6", "ref": "x"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    settings = ("sampling.temperature=0.3", "+sampling.seed=5", "+sampling.top_k=20",
                "extra.chat_template_kwargs={enable_thinking: false}", "system_prompt=Be brief.")
    with FaultServer(work_s=0) as server:
        online = run_cli(*openai_args(server.url, data, tmp_path / "online", *settings))
        sent = {b["messages"][-1]["content"]: b for b in server.bodies}
    assert online.returncode == 1  # the poisoned row

    exported = run_cli(*openai_args("http://127.0.0.1:9/v1", data, tmp_path / "exp", *settings,
                                    f"batch.export={tmp_path / 'in.jsonl'}"))
    assert exported.returncode == 0, exported.stderr
    assert f"wrote 7 requests to {tmp_path / 'in.jsonl'}" in exported.stdout
    lines = read_jsonl(tmp_path / "in.jsonl")
    assert [line["custom_id"] for line in lines] == [str(i) for i in range(7)]
    assert all(line["method"] == "POST" and line["url"] == "/v1/chat/completions" for line in lines)
    for line in lines:  # the very body the online run sent, row seed and body-only keys included
        assert line["body"] == sent[line["body"]["messages"][-1]["content"]]
    assert lines[0]["body"]["seed"] != lines[1]["body"]["seed"] and lines[0]["body"]["top_k"] == 20

    # Run the file as a Batch API would (the error file holds the failed row), then read both back.
    with FaultServer(work_s=0) as upstream, BatchServer(upstream.url) as batches:
        outputs = []
        for line in lines:
            status, body = batches.forward(line["body"])
            outputs.append({"id": "r", "custom_id": line["custom_id"],
                            "response": {"status_code": status, "body": body}, "error": None})
    write_jsonl(tmp_path / "out.jsonl", outputs[::-1])  # a batch's output comes in any order
    read_back = run_cli(*openai_args("http://127.0.0.1:9/v1", data, tmp_path / "exp", *settings,
                                     f"batch.results={tmp_path / 'out.jsonl'}", f"resume={tmp_path / 'exp'}"))
    assert read_back.returncode == 1, read_back.stderr  # as online: one row failed
    online_records = {r["index"]: r for r in read_jsonl(tmp_path / "online" / "answers.jsonl")}
    records = {r["index"]: r for r in read_jsonl(tmp_path / "exp" / "answers.jsonl")}
    assert sorted(records) == list(range(7))
    for index, record in records.items():
        assert record["answer"] == online_records[index]["answer"] and record["latency_s"] is None
    assert records[6]["error"] == "HTTP 400: prompt rejected"
    metrics = json.loads((tmp_path / "exp" / "metrics.json").read_text())
    assert metrics["answered"] == 6 and metrics["failed"] == 1 and metrics["scores"]["exact_match"] == 1.0


def test_a_results_file_that_is_not_from_this_dataset_is_refused_in_one_line(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 1", "ref": "r"}])
    write_jsonl(tmp_path / "other.jsonl", [{"custom_id": "request-7", "response": {"status_code": 200, "body": {}}}])
    (tmp_path / "garbled.jsonl").write_text("{not json\n")
    for name, said in (("other.jsonl", "none of the custom_ids in"), ("garbled.jsonl", "line 1: not JSON"),
                       ("absent.jsonl", "no such file")):
        result = run_cli(*openai_args("http://127.0.0.1:9/v1", data, tmp_path / f"run-{name}",
                                      f"batch.results={tmp_path / name}"))
        assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr


def test_a_submitted_batch_is_collected_and_a_restart_mid_poll_collects_the_same_batch(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}", "ref": f"answer to ok {i}"} for i in range(20)]
                       + [{"prompt": "poison 20", "ref": "x"}])
    out = tmp_path / "run"
    with FaultServer(work_s=0) as upstream, BatchServer(upstream.url, hold_s=4) as batches:
        args = openai_args(batches.url, data, out, "backend.batch=true", "backend.batch_poll_s=0.2")
        first = subprocess.Popen([sys.executable, "-m", "genrun", *args], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (out / "batch.json").exists() or batches.retrieves < 2:  # submitted, and polling
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert not (out / "answers.jsonl").read_text()  # nothing collected yet

        again = run_cli(*args, f"resume={out}", timeout=120)
        assert again.returncode == 1, again.stderr  # the poisoned row failed, as online
        assert len(batches.batches) == 1 and len(upstream.bodies) == 21  # one batch, each row asked once
        # a finished run resumed: nothing left, nothing sent
        assert run_cli(*args, f"resume={out}").returncode == 1 and len(batches.batches) == 1

    records = {r["index"]: r for r in read_jsonl(out / "answers.jsonl")}
    assert sorted(records) == list(range(21))
    assert all(records[i]["answer"] == f"answer to ok {i}" and records[i]["error"] is None for i in range(20))
    assert records[20]["error"] == "HTTP 400: prompt rejected"
    state = json.loads((out / "batch.json").read_text())
    assert state["status"] == "completed" and state["requests"] == 21
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["answered"] == 20 and metrics["scores"]["exact_match"] == 1.0


def test_an_expired_batch_keeps_what_it_answered_and_resuming_submits_the_rest(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}", "ref": f"answer to ok {i}"} for i in range(4)]
                       + [{"prompt": "broken 4", "ref": "x"}])
    out = tmp_path / "run"
    with FaultServer(work_s=0) as upstream, BatchServer(upstream.url, end_status="expired") as batches:
        args = openai_args(batches.url, data, out, "backend.batch=true", "backend.batch_poll_s=0.1")
        result = run_cli(*args)
        assert result.returncode == 2 and "batch batch_2 ended expired" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert len(read_jsonl(out / "answers.jsonl")) == 5  # the batch's answers and its error, recorded
        batches.end_status = "completed"
        again = run_cli(*args, f"resume={out}", "retry_errors=true")
        assert len(batches.batches) == 2  # the failed row alone went in a second batch
    assert again.returncode == 1, again.stderr
    assert json.loads((out / "metrics.json").read_text())["answered"] == 4


@pytest.mark.engine
def test_a_file_from_batch_export_runs_in_vllms_run_batch_and_gives_the_online_greedy_answers(
        tmp_path: Path, tiny_model: str) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"Say something about {w}."} for w in
                                               ("rain", "cats", "the sea", "numbers", "bread", "time")])
    common = ["backend=vllm", f"backend.model_name_or_path={tiny_model}", "sampling=greedy", "sampling.max_tokens=12",
              "dataset=default", f"dataset.path={data}"]
    engine = [f"+backend.{k}={v}" if k in ("max_model_len", "enforce_eager") else f"backend.{k}={v}"
              for k, v in VLLM_CPU.items()]
    exported = run_cli(*common, f"batch.export={tmp_path / 'in.jsonl'}", f"hydra.run.dir={tmp_path / 'b'}")
    assert exported.returncode == 0, exported.stderr
    run_batch = subprocess.run(
        [sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(tmp_path / "in.jsonl"),
         "-o", str(tmp_path / "out.jsonl"), "--model", tiny_model, "--dtype", "float32", "--max-model-len", "512",
         "--enforce-eager", "--gpu-memory-utilization", "0.2"], capture_output=True, text=True, timeout=600)
    assert run_batch.returncode == 0, run_batch.stderr[-3000:]
    read_back = run_cli(*common, f"batch.results={tmp_path / 'out.jsonl'}", f"resume={tmp_path / 'b'}")
    assert read_back.returncode == 0, read_back.stderr
    online = run_cli(*common, *engine, f"hydra.run.dir={tmp_path / 'online'}")
    assert online.returncode == 0, online.stderr
    batch_answers = {r["index"]: r["answer"] for r in read_jsonl(tmp_path / "b" / "answers.jsonl")}
    online_answers = {r["index"]: r["answer"] for r in read_jsonl(tmp_path / "online" / "answers.jsonl")}
    assert len(batch_answers) == 6 and all(batch_answers.values())
    assert batch_answers == online_answers


def test_a_row_that_cannot_be_built_is_recorded_as_online_not_left_unanswered(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"question": "ok 0", "ref": "answer to ok 0"}, {"ref": "x"}])
    args = openai_args("http://127.0.0.1:9/v1", data, tmp_path / "run", "dataset.template='{{ question }}'")
    assert run_cli(*args, f"batch.export={tmp_path / 'in.jsonl'}").returncode == 0
    lines = read_jsonl(tmp_path / "in.jsonl")
    assert [line["custom_id"] for line in lines] == ["0"]  # row 1 has no question: nothing to send
    with FaultServer(work_s=0) as upstream, BatchServer(upstream.url) as batches:
        status, body = batches.forward(lines[0]["body"])
    write_jsonl(tmp_path / "out.jsonl", [{"custom_id": "0", "response": {"status_code": status, "body": body}}])
    read_back = run_cli(*args, f"batch.results={tmp_path / 'out.jsonl'}", f"resume={tmp_path / 'run'}")
    assert read_back.returncode == 1, read_back.stderr
    records = {r["index"]: r for r in read_jsonl(tmp_path / "run" / "answers.jsonl")}
    assert records[0]["answer"] == "answer to ok 0" and "question" in records[1]["error"]
    both = run_cli(*args, "batch.export=a.jsonl", "batch.results=b.jsonl")
    assert both.returncode == 2 and "give one of them" in both.stderr


def test_text_prompts_go_to_the_completions_endpoint_in_a_batch_as_online(tmp_path: Path) -> None:
    # chat_template=false: each line's url and body are the completions endpoint's, and the batch's too
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}", "ref": " more"} for i in range(4)])
    out = tmp_path / "run"
    with FaultServer(work_s=0) as upstream, BatchServer(upstream.url) as batches:
        online = run_cli(*openai_args(upstream.url, data, tmp_path / "online", "chat_template=false"))
        assert online.returncode == 0, online.stderr[-2000:]
        sent = [b for b in upstream.bodies]
        result = run_cli(*openai_args(batches.url, data, out, "chat_template=false", "backend.batch=true",
                                      "backend.batch_poll_s=0.2"), timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert [b["endpoint"] for b in batches.batches.values()] == ["/v1/completions"]
        batched = upstream.bodies[len(sent):]
    assert sorted(b["prompt"] for b in batched) == sorted(b["prompt"] for b in sent) == [f"ok {i}" for i in range(4)]
    assert batched[0] == next(b for b in sent if b["prompt"] == batched[0]["prompt"])  # the very online body
    online_answers = {r["index"]: r["answer"] for r in read_jsonl(tmp_path / "online" / "answers.jsonl")}
    assert {r["index"]: r["answer"] for r in read_jsonl(out / "answers.jsonl")} == online_answers == {
        i: " more" for i in range(4)}
    assert json.loads((out / "metrics.json").read_text())["scores"]["exact_match"] == 1.0

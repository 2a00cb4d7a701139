"""The response cache (cache=on) against a real local server: what was answered once is not
paid for again, and a miss is explained."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import read_jsonl, run_cli, write_jsonl
from genrun.testing.fault_server import FaultServer


def cache_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from genrun.commands.cache import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def test_a_second_identical_run_sends_nothing_and_a_changed_setting_is_named(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}", "ref": f"answer to ok {i}"} for i in range(20)]
                       + [{"prompt": "poison 20", "ref": "x"}])
    store = tmp_path / "responses.sqlite"

    def run(out: str, *extra: str, path: Path = store) -> tuple[subprocess.CompletedProcess, int]:
        with FaultServer(work_s=0) as server:
            result = run_cli("backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake",
                             "backend.retries=0", "dataset=default", f"dataset.path={data}",
                             "dataset.fields.reference=ref", "cache=on", f"cache.path={path}",
                             f"hydra.run.dir={tmp_path / out}", *extra)
            return result, len(server.bodies)

    first, sent = run("a")
    assert first.returncode == 1 and sent == 21  # the poisoned row failed: errors are not cached
    second, sent = run("b")
    assert second.returncode == 1 and sent == 1  # only the failed row is asked again
    records = {r["index"]: r for r in read_jsonl(tmp_path / "b" / "answers.jsonl")}
    assert all(records[i]["cached"] is True and records[i]["answer"] == f"answer to ok {i}" for i in range(20))
    assert "cached" not in records[20]
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["cache_hits"] == 20 and metrics["scores"]["exact_match"] == 1.0

    changed, sent = run("c", "sampling.temperature=0.3")
    assert sent == 21  # another temperature: another answer
    explained = cache_cli("explain", str(tmp_path / "c"), "3")  # against what the run found there
    assert explained.returncode == 0, explained.stderr
    assert "differs in: sampling.temperature (0.3 here, 0.7 cached)" in explained.stdout
    assert cache_cli("explain", str(tmp_path / "b"), "3").stdout.startswith("in the cache")
    assert cache_cli("explain", str(tmp_path / "a"), "3").stdout.startswith("no entry from before this run holds these messages")
    stats = json.loads(cache_cli("--path", str(store), "stats").stdout)
    assert stats["entries"] == 40
    assert "cleared 40 entries" in cache_cli("--path", str(store), "clear").stdout


def test_rpm_paces_requests_evenly_from_the_start(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(12)])
    with FaultServer(work_s=0) as server:
        result = run_cli("backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake",
                         "backend.rpm=120", "dataset=default", f"dataset.path={data}", f"hydra.run.dir={tmp_path / 'r'}")
        times = sorted(t for ts in server.attempts.values() for t in ts)
    assert result.returncode == 0, result.stderr
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 2 a second, no burst first; the first request also opens the connection, so its arrival
    # lags its turn and the gap after it is shorter: the gaps are counted from the second.
    assert times[-1] - times[0] >= 5.0 and min(gaps[1:]) > 0.4


def test_tpm_paces_by_the_estimated_tokens(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(10)])
    with FaultServer(work_s=0) as server:
        # about 100 + 10 tokens a request at 6,600 a minute: about one request a second
        result = run_cli("backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake",
                         "backend.tpm=6600", "sampling.max_tokens=100", "dataset=default", f"dataset.path={data}",
                         f"hydra.run.dir={tmp_path / 't'}")
        times = sorted(t for ts in server.attempts.values() for t in ts)
    assert result.returncode == 0, result.stderr
    assert 6.0 <= times[-1] - times[0] <= 12.0


def test_a_429_without_retry_after_halves_the_requests_in_flight(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"{'busy' if i < 8 else 'ok'} {i}"} for i in range(40)])
    with FaultServer(work_s=0.05) as server:
        result = run_cli("backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake",
                         "backend.concurrency=8", "backend.base_delay=0.05", "dataset=default", f"dataset.path={data}",
                         f"hydra.run.dir={tmp_path / 'r'}")
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "r" / "genrun.log").read_text()
    assert "429 without Retry-After): 4 requests in flight, was 8" in log
    assert "requests succeed again" in log
    assert len(read_jsonl(tmp_path / "r" / "answers.jsonl")) == 40


def test_cost_is_the_tokens_times_the_prices_and_cached_rows_cost_nothing(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(10)])
    sweep = tmp_path / "sweep"
    with FaultServer(work_s=0) as server:  # 7 prompt and 3 completion tokens an answer
        result = run_cli("-m", "backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake",
                         "+backend.prices={input_per_1m: 2.5, output_per_1m: 10}", "dataset=default",
                         f"dataset.path={data}", "cache=on", f"cache.path={tmp_path / 'c.sqlite'}",
                         "sampling.temperature=0.5,0.5", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    first, second = sorted(sweep.glob("*/metrics.json"))
    assert json.loads(first.read_text())["cost"] == (10 * 7 * 2.5 + 10 * 3 * 10) / 1e6
    assert json.loads(second.read_text())["cost"] == 0.0  # the same requests: answered from the cache
    assert "cost" in (sweep / "summary.csv").read_text().splitlines()[0]


def test_keys_are_those_every_earlier_genrun_made() -> None:
    """A row's key is spliced from the run's parts, encoded once; it must be the digest of
    all its parts together, as before, or every cache already on disk would stop hitting."""
    from genrun.backend.response_cache import KeyParts, digest, encoded, sha256

    run = {"backend": "OpenAIBackend", "model": {"model_name": "modèle", "kwargs": [1, {"b": 2, "a": None}]},
           "sampling": {"temperature": 0.7, "n": 4, "stop": ["\n", "ü"]}, "extra": {}}
    parts = KeyParts(run)
    for own in ({"messages": digest([{"role": "user", "content": "hi"}]), "seed": None},
                {"messages": "ab12", "seed": 123456789},
                {"messages": "ab", "continuations": digest([" a", " b"])},
                {"messages": "x", "rolling": True},
                {"messages": 'quote " and é', "seed": 2**70}):
        assert parts.text(own) == encoded({**run, **own})
        assert sha256(parts.text(own)) == digest({**run, **own})


def test_answers_are_stored_in_few_transactions_and_all_of_them_at_close(tmp_path: Path, monkeypatch) -> None:
    from genrun.backend import response_cache
    from genrun.backend.response_cache import ResponseCache

    monkeypatch.setattr(response_cache, "PUT_EVERY_S", 3600.0)  # only PUT_ROWS or close() store
    monkeypatch.setattr(response_cache, "PUT_ROWS", 8)
    cache = ResponseCache(tmp_path / "c.sqlite")
    other = ResponseCache(tmp_path / "c.sqlite")  # another process's view
    entries = [(f"k{i}", "m", "{}", {"answer": f"a{i}"}) for i in range(10)]
    cache.put(entries[:5])
    assert other.get(["k0"]) == {}  # pending
    cache.put(entries[5:])  # 10 pending >= PUT_ROWS: stored in one transaction
    assert len(other.get([f"k{i}" for i in range(10)])) == 10
    cache.put([("k10", "m", "{}", {"answer": "a10"})])
    cache.close()  # what is pending is stored at close
    assert other.get(["k10"]) == {"k10": {"answer": "a10"}}
    other.close()

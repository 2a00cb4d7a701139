"""genrun-view in a real browser (Debian's headless Chromium, driven by Playwright) over runs
and a sweep that genrun itself made against a local server: what each page lists, the
filters, an answer holding HTML, a foreign Host header, a run still being written, and the
exported report opened with the network off."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli, wait_for_lines, write_jsonl
from genrun.testing.fault_server import FaultServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
XSS = "<script>document.title='pwned'</script><b>x</b>"
ROWS = 12


def genrun_args(server: FaultServer, data: Path, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake", "backend.retries=0",
            f"dataset.path={data}", "dataset.fields.id=id", "dataset.fields.reference=reference",
            "scoring.metrics=[exact_match]", *extra]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """outputs/: run `right` (the server's "answer to <prompt>" matches every even row's
    reference), run `html` (every answer is XSS, so all wrong) and a two-cell sweep."""
    root = tmp_path_factory.mktemp("view") / "outputs"
    data = write_jsonl(root.parent / "data.jsonl", [
        {"id": f"q{i}", "prompt": f"question {i}", "reference": f"answer to question {i}" if i % 2 == 0 else "no"}
        for i in range(ROWS)])
    with FaultServer(work_s=0) as server:
        for name in ("right", "sweep"):
            extra = ["-m", "sampling.temperature=0.0,0.5", f"hydra.sweep.dir={root / name}"] if name == "sweep" \
                else [f"hydra.run.dir={root / name}"]
            result = run_cli(*genrun_args(server, data, *extra))
            assert result.returncode == 0, result.stderr[-2000:]
    with FaultServer(work_s=0, reply=XSS) as server:
        result = run_cli(*genrun_args(server, data, f"hydra.run.dir={root / 'html'}"))
        assert result.returncode == 0, result.stderr[-2000:]
    return root


def start_view(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """genrun-view on a free port; returns the process and the address it printed."""
    process = subprocess.Popen([sys.executable, "-m", "genrun.view", "--port", "0", *args], text=True,
                               stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    line = process.stderr.readline()
    match = re.search(r"(http://\S+)", line)
    assert match, line + process.stderr.read()[-2000:] if process.poll() is not None else line
    return process, match.group(1)


@pytest.fixture(scope="module")
def view(outputs: Path):
    process, address = start_view(str(outputs))
    yield address.rstrip("/")
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "these tests need Chromium: apt-get install chromium (scripts/test.sh does)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    yield context.new_page()
    context.close()


def scores_of(run: Path) -> dict[int, float]:
    return {r["index"]: r["scores"]["exact_match"] for r in read_jsonl(run / "answers.jsonl")}


def shown_indices(page) -> set[int]:
    return {int(i) for i in page.locator("table.rows tbody tr.row, table.rows tbody tr.pair").evaluate_all(
        "rows => rows.map(r => r.dataset.index)")}


def test_the_runs_page_lists_every_run_with_its_score(view: str, outputs: Path, page) -> None:
    page.goto(view + "/")
    lines = {row.get_attribute("data-key"): row.inner_text() for row in page.locator("tr.run").all()}
    jobs = sorted(p.parent.relative_to(outputs).as_posix() for p in outputs.glob("sweep/*/answers.jsonl"))
    assert set(lines) == {"right", "html", *jobs} and len(jobs) == 2
    for key, text in lines.items():
        metrics = json.loads((outputs / key / "metrics.json").read_text())
        assert f"exact_match {metrics['scores']['exact_match']:.4g}" in text, (key, text)
        assert "ok" in text and str(ROWS) in text
    assert json.loads((outputs / "right" / "metrics.json").read_text())["scores"]["exact_match"] == 0.5
    page.fill("#runs-filter", "html")  # the filter box hides the other runs
    assert [r.get_attribute("data-key") for r in page.locator("tr.run:visible").all()] == ["html"]


def test_the_wrong_filter_lists_exactly_the_rows_scored_0(view: str, outputs: Path, page) -> None:
    page.goto(view + "/run?key=right")
    page.select_option("select[name=show]", "wrong")
    page.click("form.filters button[type=submit] >> nth=0")
    page.wait_for_url(re.compile(r"show=wrong"))
    wrong = {i for i, s in scores_of(outputs / "right").items() if s == 0}
    assert shown_indices(page) == wrong and wrong == set(range(1, ROWS, 2))
    page.goto(view + "/run?key=right&q=question%2010")  # text search, over prompt and answer
    assert shown_indices(page) == {10}


def test_the_sweep_page_shows_every_cell_and_opens_one(view: str, outputs: Path, page) -> None:
    page.goto(view + "/sweep?key=sweep")
    cells = page.locator("tr.cell")
    assert cells.count() == 2
    assert {c.locator("td").nth(1).inner_text() for c in cells.all()} == {"0.0", "0.5"}
    assert page.locator("img.plot").evaluate("img => img.naturalWidth") > 0  # summary.png, served
    cells.first.locator("a").click()
    page.wait_for_url(re.compile(r"/run\?key=sweep"))
    assert page.locator("h1").inner_text().startswith("sweep/0_")


def test_the_compare_page_shows_exactly_the_rows_scored_differently(view: str, outputs: Path, page) -> None:
    page.goto(view + "/compare?a=right&b=html")
    a, b = scores_of(outputs / "right"), scores_of(outputs / "html")
    differ = {i for i in a if a[i] != b[i]}
    assert shown_indices(page) == differ and differ == set(range(0, ROWS, 2))
    assert page.locator("#diff").inner_text().startswith("0.5")
    page.click("a:text-is('lost')")  # rows B scored higher: none
    page.wait_for_url(re.compile(r"which=lost"))
    assert shown_indices(page) == set()
    page.click("a:text-is('won')")
    page.wait_for_url(re.compile(r"which=won"))
    assert shown_indices(page) == differ


def test_an_answer_holding_html_shows_as_text_and_runs_nothing(view: str, page) -> None:
    page.goto(view + "/row?key=html&pos=0")
    title = page.title()
    assert page.locator("#answer").inner_text() == XSS
    assert page.locator(".answer b").count() == 0 and page.title() == title and "pwned" not in title
    page.goto(view + "/run?key=html")
    assert page.title() == "html · genrun-view"
    assert page.locator("table.rows td.answer").first.inner_text() == XSS


def test_a_foreign_host_header_and_writes_are_refused(view: str) -> None:
    for request in (urllib.request.Request(view + "/", headers={"Host": "evil.example"}),
                    urllib.request.Request(view + "/run?key=right", headers={"Host": "evil.example:80"}),
                    urllib.request.Request(view + "/", method="POST", data=b"")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code in (403, 405), refused.value.code
    with pytest.raises(urllib.error.HTTPError) as unknown:  # a key no scan of the folders found
        urllib.request.urlopen(view + "/run?key=../../etc", timeout=10)
    assert unknown.value.code == 404


def test_rows_appended_while_the_page_is_open_appear_within_5_seconds(tmp_path: Path, page) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", [{"id": f"q{i}", "prompt": f"slow {i}", "reference": "x"}
                                                 for i in range(30)])
    run = tmp_path / "outputs" / "live"
    run.parent.mkdir()
    with FaultServer(work_s=0.25) as server:
        genrun = subprocess.Popen([sys.executable, "-m", "genrun", *genrun_args(
            server, data, "backend.concurrency=1", f"hydra.run.dir={run}")], stderr=subprocess.PIPE, text=True)
        viewer, address = start_view(str(tmp_path / "outputs"))
        try:
            wait_for_lines(run / "answers.jsonl", 2, genrun)
            page.goto(address + "run?key=live")
            before = shown_indices(page)
            assert page.locator("#live-status").inner_text() == "running"
            written = len(read_jsonl(run / "answers.jsonl"))
            wait_for_lines(run / "answers.jsonl", written + 3, genrun)
            new = {r["index"] for r in read_jsonl(run / "answers.jsonl")} - before
            started = time.monotonic()
            page.wait_for_function("n => document.querySelectorAll('table.rows tr.row').length >= n",
                                   arg=len(before) + len(new), timeout=5000)
            assert new <= shown_indices(page) and time.monotonic() - started < 5
            assert int(page.locator("#live-rows").inner_text()) >= len(before) + len(new)
        finally:
            viewer.terminate()
            genrun.kill()
            genrun.wait(10)


def test_the_export_opens_with_the_network_off(outputs: Path, tmp_path: Path, browser) -> None:
    report = tmp_path / "report.html"
    result = subprocess.run([sys.executable, "-m", "genrun.view", str(outputs / "html"), "--export", str(report)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"({ROWS} rows)" in result.stderr
    context = browser.new_context(offline=True)
    asked: list[str] = []
    context.on("request", lambda request: asked.append(request.url))
    page = context.new_page()
    page.goto(report.as_uri())
    assert page.locator("table.metrics tr.main td").nth(1).inner_text() == "0"
    assert page.locator("img.plot").evaluate("img => img.naturalWidth") > 0  # the plot is embedded
    assert page.locator("table.rows td.text").nth(1).inner_text() == XSS and page.title() == "html · genrun report"
    assert asked == [report.as_uri()]  # nothing but the file itself
    context.close()


def test_another_interface_needs_the_token(outputs: Path) -> None:
    process, address = start_view(str(outputs), "--host", "0.0.0.0", env={"GENRUN_VIEW_TOKEN": "s3cret-token"})
    try:
        assert "token" not in address  # a token from the environment is not printed
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(address, timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(address, headers={"Authorization": "Bearer s3cret-token"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200 and b"right" in reply.read()
    finally:
        process.terminate()
        process.wait(10)


def test_rows_follow_the_journal_whatever_is_done_to_it(outputs: Path, tmp_path: Path) -> None:
    """The index is checked, not trusted; a torn last line waits; a rewritten journal is reread."""
    from genrun.view.rows import Filter, Rows

    run = tmp_path / "run"
    shutil.copytree(outputs / "right", run)
    answers = run / "answers.jsonl"
    rows = Rows(answers, "exact_match")
    rows.refresh()
    assert rows.counts()["rows"] == ROWS and rows.size == answers.stat().st_size
    assert set(rows.select(Filter(show="wrong")).tolist()) == {p for p in range(ROWS) if rows.record(p)["scores"]["exact_match"] == 0}
    with open(answers, "ab") as journal:  # a record being written: not a row yet
        journal.write(b'{"id": "q99", "index": 99')
    rows.refresh()
    assert rows.counts()["rows"] == ROWS
    with open(answers, "ab") as journal:
        journal.write(b', "answer": "late", "error": null}\nnot json\n')
    rows.refresh()
    assert rows.counts()["rows"] == ROWS + 1 and rows.record(ROWS)["answer"] == "late"
    kept = [json.loads(line) for line in answers.read_text().splitlines()[:3]]  # rewritten whole: started over
    write_jsonl(answers, kept)
    rows.refresh()
    assert rows.counts()["rows"] == 3 and [rows.record(p)["id"] for p in range(3)] == [r["id"] for r in kept]
    other = Rows(answers, "exact_match")  # the index now describes another journal: not used
    other.refresh()
    assert other.counts()["rows"] == 3


def test_a_missing_folder_or_a_bad_export_is_one_line(tmp_path: Path) -> None:
    for args in (["/no/such/folder"], [str(tmp_path), "--export", str(tmp_path / "r.html")],
                 [str(tmp_path), "--port", "70000"]):
        result = subprocess.run([sys.executable, "-m", "genrun.view", *args], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("genrun-view: error:")


def test_the_workers_end_with_the_server(outputs: Path) -> None:
    import psutil

    process, address = start_view(str(outputs))
    with urllib.request.urlopen(address + "run?key=right&show=wrong", timeout=30) as reply:  # the workers built it
        assert reply.status == 200
    workers = psutil.Process(process.pid).children(recursive=True)
    assert len(workers) >= 2
    process.terminate()
    process.wait(10)
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert alive == []


def test_a_run_stopped_by_a_mistake_shows_its_error(tmp_path: Path, page) -> None:
    root = tmp_path / "outputs"
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "q0", "prompt": "question 0", "reference": "x"}])
    shots = write_jsonl(tmp_path / "shots.jsonl", [{"question": "q", "answer": "a"}] * 3)
    with FaultServer(work_s=0) as server:
        result = run_cli(*genrun_args(server, data, "dataset.fewshot.k=2", f"dataset.fewshot.path={shots}",
                                      f"hydra.run.dir={root / 'stopped'}"))
    assert result.returncode == 2
    error = json.loads((root / "stopped" / "metrics.json").read_text())["error"]
    assert "has no column" in error
    process, address = start_view(str(root))
    try:
        page.goto(address.rstrip("/") + "/")
        line = page.locator("tr.run").inner_text()
        assert "error" in line and "has no column" in line and "No runs" not in line
        page.goto(address.rstrip("/") + "/run?key=stopped")
        assert "has no column" in page.locator("#run-error").inner_text()
        assert "No scores (yet)" not in page.content()
    finally:
        process.terminate()
        process.wait(10)

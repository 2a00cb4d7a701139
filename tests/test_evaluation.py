"""Evaluations on real dataset shapes: prompt templates, task presets, answer extraction,
few-shot examples and rescoring, on hub-shaped parquet files the tests write.

The model is the local OpenAI-compatible server of genrun.testing with a fixed reply (a
model that always answers "(B)"), so every expected score is known exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli, write_jsonl
from genrun.scoring import Scorer
from genrun.scoring.extract import boxed, choice, number
from genrun.testing.fault_server import FaultServer

SUBJECTS = ["anatomy", "astronomy", "virology"]


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def mmlu_rows(n: int) -> list[dict]:
    """cais/mmlu's columns: question, subject, choices (four strings), answer (their index)."""
    return [{"question": f"Question {i}?", "subject": SUBJECTS[i % 3],
             "choices": [f"choice {c} of {i}" for c in "abcd"], "answer": (i * 7) % 4} for i in range(n)]


def gsm8k_rows(n: int) -> list[dict]:
    """openai/gsm8k's columns: question, answer (a worked solution ending "#### N")."""
    totals = [(i * 3) % 11 if i % 5 else 1000 + i for i in range(n)]  # some with a thousands comma
    return [{"question": f"Tom has {t - 1} apples and buys 1. How many now?",
             "answer": f"He has {t - 1} + 1 = {t} apples.\n#### {t:,}"} for t in totals]


def server_args(server: FaultServer, out: Path, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake",
            "backend.retries=0", f"hydra.run.dir={out}", *extra]


def test_mmlu_preset_scores_exactly_the_share_of_b_answers(tmp_path: Path) -> None:
    rows = mmlu_rows(40)
    data = write_parquet(tmp_path / "test.parquet", rows)
    out = tmp_path / "run"
    with FaultServer(work_s=0, reply="I think the answer is (B).") as server:
        result = run_cli(*server_args(server, out, "task=mmlu_generative", f"dataset.path={data}", "dataset.name=null"))
        prompts = [b["messages"][-1]["content"] for b in server.bodies]
    assert result.returncode == 0, result.stderr
    share_b = sum(r["answer"] == 1 for r in rows) / len(rows)
    assert json.loads((out / "metrics.json").read_text())["scores"] == {"accuracy": round(share_b, 4)}
    first = min(read_jsonl(out / "answers.jsonl"), key=lambda r: r["index"])
    assert first["extracted"] == "B" and first["reference"] == "A"  # answer 0 is A
    # the record keeps the prompt the model saw: the template, rendered
    assert first["prompt"] == "Question 0?\n\nA. choice a of 0\nB. choice b of 0\nC. choice c of 0\nD. choice d of 0" \
                              "\n\nAnswer with the letter of the correct choice."
    assert first["prompt"] in prompts
    assert json.loads((out / "run.json").read_text())["scoring"] == {"metrics": ["accuracy"], "extract": "choice",
                                                                     "pattern": None, "choice_policy": "letter",
                                                                     "group_by": None, "cluster_by": None}


def test_gsm8k_preset_reads_the_reference_after_its_marks(tmp_path: Path) -> None:
    rows = gsm8k_rows(30)
    data = write_parquet(tmp_path / "test.parquet", rows)
    out = tmp_path / "run"
    with FaultServer(work_s=0, reply="First 3, then 4 more. The answer is 7.") as server:
        result = run_cli(*server_args(server, out, "task=gsm8k", f"dataset.path={data}", "dataset.name=null"))
    assert result.returncode == 0, result.stderr
    share_7 = sum(r["answer"].endswith("#### 7") for r in rows) / len(rows)
    assert share_7 > 0
    assert json.loads((out / "metrics.json").read_text())["scores"]["accuracy"] == round(share_7, 4)


def test_rescoring_with_number_extraction_moves_the_score_without_a_request(tmp_path: Path) -> None:
    rows = gsm8k_rows(30)
    data = write_parquet(tmp_path / "test.parquet", rows)
    out = tmp_path / "run"
    with FaultServer(work_s=0, reply="The answer is 7.") as server:
        result = run_cli(*server_args(server, out, "task=gsm8k", f"dataset.path={data}", "dataset.name=null",
                                      "scoring.extract=none"))
        assert result.returncode == 0, result.stderr
        before = json.loads((out / "metrics.json").read_text())["scores"]["accuracy"]
        sent = len(server.bodies)
        rescored = subprocess.run([sys.executable, "-m", "genrun.commands.score", str(out), "scoring.extract=number"],
                                  capture_output=True, text=True, timeout=120)
        assert len(server.bodies) == sent  # no model was asked
    assert rescored.returncode == 0, rescored.stderr
    after = json.loads((out / "metrics.json").read_text())
    assert before == 0.0 and after["scores"]["accuracy"] == round(sum(r["answer"].endswith("#### 7") for r in rows) / 30, 4)
    assert after["rows"] == 30 and "wall_s" in after  # the run's other figures are kept
    assert {r["extracted"] for r in read_jsonl(out / "answers.jsonl")} == {"7"}
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["scoring"]["extract"] == "number"
    assert run_json["rescored"][0]["scoring"]["extract"] == "none" and run_json["rescored"][0]["scores"]["accuracy"] == 0.0
    bad = subprocess.run([sys.executable, "-m", "genrun.commands.score", str(out), "backend.model_name=x"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "scoring.KEY=VALUE and judge overrides only" in bad.stderr and "Traceback" not in bad.stderr


def test_a_template_names_the_column_a_row_lacks(tmp_path: Path) -> None:
    rows = [{"question": "q0", "hint": "h0"}, {"question": "q1"}, {"question": "q2", "hint": "h2"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "run"
    with FaultServer(work_s=0) as server:
        result = run_cli(*server_args(server, out, "dataset=default", f"dataset.path={data}",
                                      "dataset.template='{{ question }} ({{ hint }})'"))
        assert result.returncode == 1  # one row failed
        records = {r["index"]: r for r in read_jsonl(out / "answers.jsonl")}
        assert records[0]["answer"] == "answer to q0 (h0)" and records[2]["prompt"] == "q2 (h2)"
        assert records[1]["answer"] is None and "uses 'hint', which the row does not have" in records[1]["error"]
        # no row with the column: the run stops at start, in one line
        result = run_cli(*server_args(server, tmp_path / "run2", "dataset=default", f"dataset.path={data}",
                                      "dataset.template='{{ questoin }}'"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "dataset.template uses 'questoin'" in result.stderr and "columns: question, hint" in result.stderr


def test_fewshot_examples_come_from_another_file_with_a_fixed_seed(tmp_path: Path) -> None:
    data = write_parquet(tmp_path / "test.parquet", mmlu_rows(6))
    dev = write_parquet(tmp_path / "dev.parquet", [{**r, "question": f"Dev {i}?"} for i, r in enumerate(mmlu_rows(20))])
    runs = []
    for name in ("a", "b"):
        with FaultServer(work_s=0, reply="(B)") as server:
            result = run_cli(*server_args(server, tmp_path / name, "task=mmlu_generative", f"dataset.path={data}",
                                          "dataset.name=null", "dataset.fewshot.k=3", f"dataset.fewshot.path={dev}"))
            assert result.returncode == 0, result.stderr
            runs.append((json.loads((tmp_path / name / "run.json").read_text())["dataset"]["fewshot"],
                         server.bodies[0]["messages"]))
    (shots, messages), (shots_again, _) = runs
    assert shots == shots_again and len(shots["ids"]) == 3 and shots["seed"] == 1234
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]
    assert messages[0]["content"].startswith(f"Dev {shots['ids'][0]}?")
    assert messages[1]["content"] in "ABCD"  # the example's reference, as its letter


def test_a_fewshot_file_without_the_datasets_columns_is_one_line_and_exit_2(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 1", "answers": ["x"]}, {"prompt": "ok 2", "answers": ["y"]}])
    shots = write_jsonl(tmp_path / "shots.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(3)])
    out = tmp_path / "run"
    with FaultServer(work_s=0) as server:
        result = run_cli(*server_args(server, out, "dataset=default", f"dataset.path={data}",
                                      "dataset.fields.reference=answers", "dataset.fewshot.k=2",
                                      f"dataset.fewshot.path={shots}"))
        assert server.bodies == []  # stopped before any request
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("genrun: error:")]
    assert len(said) == 1 and f"{shots} has no column 'answers'" in said[0] and "its columns: question, answer" in said[0]


def test_arc_and_open_qa_presets_on_local_files(tmp_path: Path) -> None:
    arc = write_parquet(tmp_path / "arc.parquet", [
        {"id": "q1", "question": "Which?", "choices": {"text": ["x", "y", "z"], "label": ["A", "B", "C"]}, "answerKey": "B"},
        {"id": "q2", "question": "What?", "choices": {"text": ["u", "v", "w", "t"], "label": ["1", "2", "3", "4"]},
         "answerKey": "2"},
        {"id": "q3", "question": "Who?", "choices": {"text": ["m", "n"], "label": ["A", "B"]}, "answerKey": "A"}])
    nq = write_parquet(tmp_path / "nq.parquet", [{"question": "who wrote hamlet", "answer": ["Shakespeare", "W. S."]},
                                                 {"question": "capital of peru", "answer": ["Lima"]}])
    with FaultServer(work_s=0, reply="The answer is B.") as server:
        result = run_cli(*server_args(server, tmp_path / "arc", "task=arc_challenge_generative", f"dataset.path={arc}",
                                      "dataset.name=null"))
    assert result.returncode == 0, result.stderr
    records = sorted(read_jsonl(tmp_path / "arc" / "answers.jsonl"), key=lambda r: r["index"])
    assert [r["reference"] for r in records] == ["B", "B", "A"]
    assert json.loads((tmp_path / "arc" / "metrics.json").read_text())["scores"]["accuracy"] == round(2 / 3, 4)
    with FaultServer(work_s=0, reply="Shakespeare") as server:
        result = run_cli(*server_args(server, tmp_path / "nq", "task=nq_open", f"dataset.path={nq}",
                                      "dataset.name=null"))
        assert server.bodies[0]["messages"][0] == {"role": "system", "content": "Answer in a few words."}
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "nq" / "metrics.json").read_text())["scores"]["exact_match"] == 0.5


def test_the_old_metric_key_still_works_with_a_deprecation_line(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 1", "ref": "answer to ok 1"}])
    with FaultServer(work_s=0) as server:
        result = run_cli(*server_args(server, tmp_path / "run", "dataset=default", f"dataset.path={data}",
                                      "dataset.fields.reference=ref", "metric=[exact_match]"))
    assert result.returncode == 0, result.stderr
    assert "metric= is deprecated: use scoring.metrics" in result.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["scores"] == {"exact_match": 1.0}


@pytest.mark.parametrize("text, expected", [
    ("I think the answer is (B).", "B"), ("Answer: C", "C"), ("(A) is wrong, (D) is right", "D"), ("B. Paris", "B"),
    ("**C**", "C"), ("The correct option is D", "D"), ("A spider has eight legs.", None),
    ("The answer is a bit unclear, but (C)", "C"), ("Paris", None)])
def test_choice_extraction(text: str, expected: str | None) -> None:
    assert choice(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("She has 72 apples.", "72"), ("He sold 48/2 = 24 clips.\n#### 1,000", "1000"), ("$1,000.00", "1000"),
    ("3.50 dollars", "3.5"), ("It fell to -5 degrees", "-5"), ("no number", None)])
def test_number_extraction(text: str, expected: str | None) -> None:
    assert number(text) == expected


def test_boxed_regex_and_thinking() -> None:
    assert boxed(r"so \boxed{\frac{1}{2}} is it") == r"\frac{1}{2}" and boxed("none") is None
    scorer = Scorer(["accuracy"], "regex", r"FINAL: (\w+)")
    assert scorer.score("FINAL: no <think>x</think> FINAL: yes", "yes") == ("yes", {"accuracy": 1.0})
    # thinking is stripped before extraction; "1.5" is not "15" once extracted
    assert Scorer(["accuracy"], "number").score("<think>It is 15</think> 1.5", "15") == ("1.5", {"accuracy": 0.0})


def test_an_llm_judge_scores_answers_in_the_run_and_after_it(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": f"Capital {i}?", "ref": ["Paris", "paris"] if i % 2 else "Rome"}
                                              for i in range(6)] + [{"q": "No reference", "ref": None}])
    common = ("dataset=default", f"dataset.path={data}", "dataset.fields.prompt=q", "dataset.fields.reference=ref")
    with FaultServer(work_s=0, reply="Paris") as model, FaultServer(work_s=0, reply="Verdict: correct.") as judge:
        judge_args = ("judge=openai", f"judge.backend.base_url={judge.url}", "judge.backend.model_name=judge")
        result = run_cli(*server_args(model, tmp_path / "a", *common, *judge_args))
        assert result.returncode == 0, result.stderr
        rubric = judge.bodies[0]["messages"][-1]["content"]
        assert "Question: Capital" in rubric and "Answer to grade: Paris" in rubric
        assert len(judge.bodies) == 6  # the row without a reference is not judged
    records = {r["index"]: r for r in read_jsonl(tmp_path / "a" / "answers.jsonl")}
    assert records[1]["scores"]["judge"] == 1.0 and records[1]["judge"]["text"] == "Verdict: correct."
    assert records[1]["answer"] == "Paris" and "judge" not in records[6].get("scores", {})
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["scores"]["judge"] == 1.0

    # judged after the fact, with genrun-score; rows judged already are not judged again
    with FaultServer(work_s=0, reply="Paris") as model:
        assert run_cli(*server_args(model, tmp_path / "b", *common)).returncode == 0
    for reply, expected, sent in (("That is incorrect.", 0.0, 6), ("correct", 0.0, 0)):
        with FaultServer(work_s=0, reply=reply) as judge:
            result = subprocess.run([sys.executable, "-m", "genrun.commands.score", str(tmp_path / "b"), "judge=openai",
                                     f"judge.backend.base_url={judge.url}", "judge.backend.model_name=judge"],
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr
            assert len(judge.bodies) == sent
        assert json.loads((tmp_path / "b" / "metrics.json").read_text())["scores"]["judge"] == expected


def test_genrun_score_rescores_every_job_of_a_sweep_and_its_summary(tmp_path: Path) -> None:
    data = write_parquet(tmp_path / "test.parquet", gsm8k_rows(10))
    sweep = tmp_path / "sweep"
    with FaultServer(work_s=0, reply="The answer is 7.") as server:
        result = run_cli("-m", "backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake",
                         "task=gsm8k", f"dataset.path={data}", "dataset.name=null", "scoring.extract=none",
                         "sampling.temperature=0,1", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    before = (sweep / "summary.csv").read_text()
    result = subprocess.run([sys.executable, "-m", "genrun.commands.score", str(sweep), "scoring.extract=number"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    share = round(sum(r["answer"].endswith("#### 7") for r in gsm8k_rows(10)) / 10, 4)
    jobs = sorted(sweep.glob("*/metrics.json"))
    assert len(jobs) == 2 and all(json.loads(j.read_text())["scores"]["accuracy"] == share for j in jobs)
    after = (sweep / "summary.csv").read_text()
    assert after != before and str(share) in after


def test_a_per_group_column_holding_lists_groups_rows_without_crashing() -> None:
    # a dataset's column is data: a list or mapping in the per_group column is a group like any other
    from genrun.prompt.fewshot import Example, Shots, group_of

    tags = {"row": ["physics", "waves"], "other": ["physics"]}
    shots = Shots("first_n", 1, 0, "tags")
    shots.candidates[group_of({"tags": tags["row"]}, "tags")] = [Example("d0", "Dev?", "A")]
    shots.candidates[group_of({"tags": tags["other"]}, "tags")] = [Example("d1", "Other?", "B")]
    turns, ids = shots.for_row({"tags": ["physics", "waves"]}, "q0", "Test?")
    assert ids == ["d0"] and turns[0] == {"role": "user", "content": "Dev?"}
    assert group_of({"tags": {"b": 1, "a": 2}}, "tags") == group_of({"tags": {"a": 2, "b": 1}}, "tags")

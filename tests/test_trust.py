"""Scores that say how far they can be trusted: truncated answers, per-group scores, clustered
intervals, many comparisons with adjusted p-values, judge provenance, explained differences
and choice extraction that says when the letter and the text disagree. Runs go through the
real CLI against a real local server (or the tiny model on transformers); the estimators are
checked against statsmodels and lm-evaluation-harness's own filter."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli, write_jsonl
from genrun.rundir.tally import Tally
from genrun.scoring.scorer import Scorer
from genrun.scoring.stats import benjamini_hochberg, cluster_se, holm, t95
from genrun.testing.fault_server import FaultServer


def server_args(server: FaultServer, data: Path, out: Path, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake", "backend.retries=0",
            "dataset=default", f"dataset.path={data}", "dataset.fields.reference=ref", "scoring.metrics=[accuracy]",
            f"hydra.run.dir={out}", *extra]


def command(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)


# -- truncation --------------------------------------------------------------------------------

def test_half_the_answers_at_the_cap_are_counted_scored_apart_and_warned(tmp_path: Path) -> None:
    # "cut" prompts come back with finish_reason=length; their references are wrong on purpose
    rows = [{"id": i, "prompt": f"{'cut' if i % 2 else 'plain'} {i}", "ref": f"answer to plain {i}"} for i in range(8)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    with FaultServer() as server:
        lenient = run_cli(*server_args(server, data, tmp_path / "lenient", "sampling.max_tokens=64"))
        strict = run_cli(*server_args(server, data, tmp_path / "strict", "sampling.max_tokens=64",
                                      "scoring.strict=true"))
        under = run_cli(*server_args(server, data, tmp_path / "under", "scoring.max_truncated=0.6"))
    assert lenient.returncode == 0, lenient.stderr
    metrics = json.loads((tmp_path / "lenient" / "metrics.json").read_text())
    assert (metrics["truncated_rows"], metrics["truncated_share"]) == (4, 0.5)
    assert metrics["scores"]["accuracy"] == 0.5
    assert metrics["scores_finished"]["accuracy"] == 1.0 and metrics["scores_truncated"]["accuracy"] == 0.0
    assert metrics["scores_finished_rows"]["accuracy"] == metrics["scores_truncated_rows"]["accuracy"] == 4
    output = lenient.stdout + lenient.stderr
    warning = [line for line in output.splitlines() if "hit the token cap" in line]
    assert len(warning) == 1, output
    assert "50%" in warning[0] and "sampling.max_tokens=64" in warning[0] and "raise sampling.max_tokens" in warning[0]
    assert "1.000 on finished answers, 0.000 on truncated" in warning[0]
    assert metrics["status"] == "ok"
    # strict: the same run exits 1, and metrics.json says why
    assert strict.returncode == 1, strict.stderr
    strict_metrics = json.loads((tmp_path / "strict" / "metrics.json").read_text())
    assert strict_metrics["status"] == "truncated" and "scoring.strict=true" in strict_metrics["error"]
    # below the threshold: no warning
    assert under.returncode == 0 and "hit the token cap" not in under.stdout + under.stderr


# -- groups, a sweep over them, and many comparisons ------------------------------------------

SUBJECTS = {"algebra": [1, 1, 0, 1], "biology": [1, 0, 0], "chemistry": [0, 0, 1, 0, 1]}


def subject_rows() -> list[dict]:
    rows = []
    for subject, rights in SUBJECTS.items():
        for right in rights:
            i = len(rows)
            rows.append({"id": i, "subject": subject, "prompt": f"q{i}", "ref": f"answer to q{i}" if right else "no"})
    return rows


def test_group_scores_equal_hand_computed_means_and_the_macro_mean(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", subject_rows())
    with FaultServer() as server:
        result = run_cli(*server_args(server, data, tmp_path / "run", "scoring.group_by=subject"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    means = {s: sum(r) / len(r) for s, r in SUBJECTS.items()}
    assert metrics["group_by"] == "subject"
    assert {g: v["scores"]["accuracy"] for g, v in metrics["groups"].items()} == {
        s: round(m, 4) for s, m in means.items()}
    assert {g: v["rows"] for g, v in metrics["groups"].items()} == {s: len(r) for s, r in SUBJECTS.items()}
    every = [x for r in SUBJECTS.values() for x in r]
    assert metrics["scores"]["accuracy"] == round(sum(every) / len(every), 4)  # the mean over rows
    assert metrics["scores_macro"]["accuracy"] == round(sum(means.values()) / 3, 4)  # the mean over groups
    low, high = metrics["scores_macro_ci95"]["accuracy"]
    assert low < metrics["scores_macro"]["accuracy"] < high
    for group in metrics["groups"].values():
        low, high = group["scores_ci95"]["accuracy"]
        assert low <= group["scores"]["accuracy"] <= high
    assert all(r["columns"] == {"subject": r_in["subject"]} for r, r_in in
               zip(sorted(read_jsonl(tmp_path / "run" / "answers.jsonl"), key=lambda r: r["index"]), subject_rows()))


def test_a_missing_group_column_is_one_line_before_any_request(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", subject_rows())
    with FaultServer() as server:
        result = run_cli(*server_args(server, data, tmp_path / "run", "scoring.group_by=topic"))
        assert not server.attempts
    assert result.returncode == 2
    assert "scoring.group_by='topic' is not a column" in result.stderr and "Traceback" not in result.stderr


def test_a_sweep_summary_has_groups_mdd_and_compare_adjusts_its_p_values(tmp_path: Path) -> None:
    import statsmodels.stats.multitest as multitest

    # three datasets of the same 120 questions; the server answers "answer to qI", so a job is
    # right on the rows whose reference is that: all of them, all but the first 30, all but 10
    paths = []
    for name, wrong in (("all", 0), ("less", 30), ("fewer", 10)):
        paths.append(write_jsonl(tmp_path / f"{name}.jsonl", [
            {"id": i, "subject": "abc"[i % 3], "prompt": f"q{i}", "ref": "no" if i < wrong else f"answer to q{i}"}
            for i in range(120)]))
    sweep = tmp_path / "sweep"
    with FaultServer() as server:
        result = run_cli("-m", *server_args(server, paths[0], tmp_path / "unused", "scoring.group_by=subject",
                                            f"hydra.sweep.dir={sweep}"), f"dataset.path={','.join(map(str, paths))}")
    assert result.returncode == 0, result.stderr
    summary = (sweep / "summary.md").read_text()
    assert "mdd_accuracy" in summary and "truncated" in summary and "By group (accuracy" in summary
    assert "| a |" in summary and "| b |" in summary and "| c |" in summary
    # every job against job 0, on the rows they share
    compared = command("genrun.commands.compare", str(sweep), "--force", "--json")
    assert compared.returncode == 0, compared.stderr
    result = json.loads(compared.stdout)
    runs = {c["run"]: c for c in result["comparisons"]}
    assert set(runs) == {"1", "2"} and runs["1"]["diff"] < 0 and runs["2"]["diff"] < 0
    p = [runs["1"]["p_value"], runs["2"]["p_value"]]
    assert [runs["1"]["p_holm"], runs["2"]["p_holm"]] == pytest.approx(list(multitest.multipletests(p, method="holm")[1]))
    assert [runs["1"]["p_bh"], runs["2"]["p_bh"]] == pytest.approx(list(multitest.multipletests(p, method="fdr_bh")[1]))
    assert runs["1"]["significant_holm"] and runs["1"]["mdd"] > 0
    table = command("genrun.commands.compare", str(sweep), "--force", "--reference", "2")
    assert table.returncode == 0 and "p Holm" in table.stdout and "| 0 |" in table.stdout and "| 1 |" in table.stdout


def test_holm_and_benjamini_hochberg_equal_statsmodels() -> None:
    import statsmodels.stats.multitest as multitest

    generator = random.Random(3)
    for size in (1, 2, 5, 12, 40):
        p = [generator.choice([generator.random(), generator.random() / 50, 0.01, 1.0]) for _ in range(size)]
        assert holm(p) == pytest.approx(list(multitest.multipletests(p, method="holm")[1]), abs=1e-12)
        assert benjamini_hochberg(p) == pytest.approx(list(multitest.multipletests(p, method="fdr_bh")[1]), abs=1e-12)


# -- clustered intervals ---------------------------------------------------------------------

def test_clustered_intervals_are_wider_and_equal_statsmodels_cluster_robust_se() -> None:
    import numpy as np
    import statsmodels.api as sm

    generator = np.random.default_rng(7)
    records, values, groups = [], [], []
    for cluster in range(25):  # a passage's questions: all right or all wrong, mostly
        easy = generator.random() < 0.5
        for _ in range(int(generator.integers(3, 9))):
            value = float(generator.random() < (0.9 if easy else 0.1))
            records.append({"index": len(records), "error": None, "answer": "x", "scores": {"accuracy": value},
                            "columns": {"passage": f"p{cluster}"}})
            values.append(value)
            groups.append(cluster)
    tally = Tally(["accuracy"], cluster_by="passage")
    for record in records:
        tally.add(record)
    result = tally.result()
    fit = sm.OLS(np.asarray(values), np.ones((len(values), 1))).fit(cov_type="cluster",
                                                                     cov_kwds={"groups": np.asarray(groups)})
    clusters = {}
    for value, group in zip(values, groups):
        count, total = clusters.get(group, (0, 0.0))
        clusters[group] = (count + 1, total + value)
    se = cluster_se(len(values), sum(values), list(clusters.values()))
    assert se == pytest.approx(float(fit.bse[0]), abs=1e-6)
    mean = sum(values) / len(values)
    low, high = result["scores_ci95"]["accuracy"]
    assert low == pytest.approx(mean - t95(24) * se, abs=1e-4) and high == pytest.approx(mean + t95(24) * se, abs=1e-4)
    iid_low, iid_high = result["scores_ci95_iid"]["accuracy"]
    assert high - low > 1.5 * (iid_high - iid_low)  # strong within-cluster correlation: much wider
    assert result["clusters"] == 25 and "cluster-robust" in result["ci95_estimator"]


# -- judges ---------------------------------------------------------------------------------

def test_run_json_records_the_judge_and_compare_warns_when_judges_differ(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": i, "prompt": f"q{i}", "ref": f"answer to q{i}"}
                                              for i in range(6)])
    with FaultServer() as model, FaultServer(reply="correct") as judge:
        judged = ("judge=openai", f"judge.backend.base_url={judge.url}", "judge.backend.model_name=judge-a",
                  "judge.backend.api_key=sk-secret-judge-key")
        for name, extra in (("a", ()), ("b", ("judge.backend.model_name=judge-b",)), ("c", ())):
            result = run_cli(*server_args(model, data, tmp_path / name), *judged, *extra)
            assert result.returncode == 0, result.stderr
    run_a = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run_a["judge"]["model"]["model_name"] == "judge-a"
    assert len(run_a["judge"]["template_sha256"]) == 16 and run_a["judge"]["sampling"]["temperature"] == 0.0
    assert run_a["judge"]["genrun_version"] and run_a["judge"]["verdict"] == "label"
    assert "sk-secret-judge-key" not in (tmp_path / "a" / "run.json").read_text()
    differ = command("genrun.commands.compare", str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "judge")
    assert differ.returncode == 0, differ.stderr
    assert "judged differently" in differ.stdout and '"judge-a"' in differ.stdout and '"judge-b"' in differ.stdout
    same = command("genrun.commands.compare", str(tmp_path / "a"), str(tmp_path / "c"), "--metric", "judge")
    assert same.returncode == 0 and "judged differently" not in same.stdout


# -- explained differences --------------------------------------------------------------------

OTHER_TEMPLATE = ("{% for m in messages %}<<{{ m['role'] }}>> {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}<<assistant>>{% endif %}")


@pytest.mark.engine
def test_two_runs_differing_only_in_the_chat_template_are_explained_as_such(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": f"r{i}", "prompt": f"Say {i}."} for i in range(4)])
    common = ("experiment=tiny", "dataset=default", f"dataset.path={data}", "dataset.fields.id=id", "sampling=greedy",
              "sampling.max_tokens=4", "record_messages=true")
    for name, extra in (("a", ()), ("b", (f"backend.chat_template={json.dumps(OTHER_TEMPLATE)}",)),
                        ("a2", ())):
        result = run_cli(*common, f"hydra.run.dir={tmp_path / name}", *extra)
        assert result.returncode == 0, result.stderr
    explained = command("genrun.commands.compare", str(tmp_path / "a"), str(tmp_path / "b"), "--explain", "--json")
    assert explained.returncode == 0, explained.stderr
    result = json.loads(explained.stdout)
    keys = {s["key"] for s in result["settings"]}
    assert keys == {"config.backend.chat_template", "model.chat_template_sha256"}, keys
    assert result["built_prompts_differ"] == 0 and result["rows"] == 4
    assert (result["rendered_compared"], result["rendered_prompts_differ"]) == (4, 4)
    assert [row["id"] for row in result["rendered_first"]] == ["r0", "r1", "r2"]
    assert any(line.startswith("+<<user>> Say 0.") for line in result["rendered_first"][0]["diff"])
    assert any(line.startswith("-") and "Say 0." in line for line in result["rendered_first"][0]["diff"])
    text = command("genrun.commands.compare", str(tmp_path / "a"), str(tmp_path / "b"), "--explain").stdout
    assert "config.backend.chat_template" in text and "identical on all 4 rows" in text
    assert "differ on 4 of 4 rows" in text and 'row id "r0"' in text
    # the same settings twice: nothing differs, and greedy answers to the same prompts agree
    again = json.loads(command("genrun.commands.compare", str(tmp_path / "a"), str(tmp_path / "a2"), "--explain",
                               "--json").stdout)
    assert again["settings"] == [] and again["rendered_prompts_differ"] == 0
    assert (again["greedy_same_prompt"], again["greedy_answers_differ"]) == (4, 0)


def test_explain_shows_the_first_rows_whose_prompts_differ(tmp_path: Path) -> None:
    rows = [{"id": i, "prompt": f"q{i}", "ref": f"answer to q{i}"} for i in range(5)]
    data_a = write_jsonl(tmp_path / "a.jsonl", rows)
    data_b = write_jsonl(tmp_path / "b.jsonl", [dict(r, prompt=f"{r['prompt']}?" if r["id"] >= 3 else r["prompt"])
                                                for r in rows])
    with FaultServer() as server:
        for name, data in (("a", data_a), ("b", data_b)):
            assert run_cli(*server_args(server, data, tmp_path / name)).returncode == 0
    result = json.loads(command("genrun.commands.compare", str(tmp_path / "a"), str(tmp_path / "b"), "--explain",
                                "--json").stdout)
    assert result["built_prompts_differ"] == 2
    assert [(r["id"], r["diff"]) for r in result["built_first"]] == [(3, ["-q3", "+q3?"]), (4, ["-q4", "+q4?"])]
    assert any(s["key"] == "config.dataset.path" for s in result["settings"])


# -- choice extraction: letter and text -------------------------------------------------------

CHOICES = ["True, True", "False, False", "True, False", "False, True"]


@pytest.mark.parametrize(("policy", "extracted", "score"), [("letter", "A", 0.0), ("text", "C", 1.0),
                                                            ("strict", None, 0.0)])
def test_a_letter_with_another_choices_text_is_ambiguous_and_each_policy_scores_it(
        policy: str, extracted: str | None, score: float) -> None:
    scorer = Scorer(["accuracy"], "choice", choice_policy=policy)
    got, scores, reading = scorer.read("A. True, False", "C", CHOICES)
    assert reading == {"letter": "A", "text": "C", "ambiguous": True}
    assert (got, scores["accuracy"], scores["ambiguous"]) == (extracted, score, True)
    agreeing = scorer.score("C. True, False", "C", CHOICES)
    assert agreeing[0] == "C" and agreeing[1]["ambiguous"] is False and agreeing[1]["accuracy"] == 1.0


ANSWERS = ["A. True, False", "(B)", "The answer is (D) False, True", "I think true, false.", "Answer: D",
           "false, true is right", "B", "None of these", "(E) maybe", "So: C", "Answer:B because False, False",
           "Guilty of Romance", "", "true, true and false, false", "**C**", "c", "answer is (A)"]


def test_the_text_policy_is_lm_evals_flexible_extract_row_for_row() -> None:
    from lm_eval.filters.extraction import MultiChoiceRegexFilter

    docs = [{"choices": CHOICES}, {"choices": ["Guilty", "Guilty of Romance", "Innocent", "Unknown"]}]
    lm_eval = MultiChoiceRegexFilter(regex_pattern=r"(\([A-Z]\))", group_select=0, ignore_case=True,
                                     ignore_punctuation=True)
    scorer = Scorer(["accuracy"], "choice", choice_policy="text")
    for doc in docs:
        expected = lm_eval.apply([[a] for a in ANSWERS], [doc] * len(ANSWERS))
        for answer, (theirs,) in zip(ANSWERS, expected):
            ours = scorer.score(answer, "A", doc["choices"])[0]
            assert (f"({ours})" if ours else "[invalid]") == theirs, (answer, doc)


def test_a_run_records_both_readings_and_the_share_of_ambiguous_rows(tmp_path: Path) -> None:
    rows = [{"id": i, "q": f"q{i}", "choices": CHOICES, "answer": 2} for i in range(4)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    with FaultServer(reply="A. True, False") as server:
        for policy in ("letter", "text"):
            result = run_cli("backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake",
                             "dataset=default", f"dataset.path={data}", "dataset.fields.prompt=q",
                             "dataset.fields.choices=choices", "dataset.fields.reference=answer",
                             "scoring.extract=choice", "scoring.metrics=[accuracy]",
                             f"scoring.choice_policy={policy}", f"hydra.run.dir={tmp_path / policy}")
            assert result.returncode == 0, result.stderr
    record = read_jsonl(tmp_path / "letter" / "answers.jsonl")[0]
    assert record["choice_reading"] == {"letter": "A", "text": "C"} and record["scores"]["ambiguous"] is True
    assert record["extracted"] == "A" and record["choices"] == CHOICES
    letter = json.loads((tmp_path / "letter" / "metrics.json").read_text())
    text = json.loads((tmp_path / "text" / "metrics.json").read_text())
    assert (letter["ambiguous_rows"], letter["ambiguous_share"]) == (4, 1.0)
    assert letter["scores"]["accuracy"] == 0.0 and text["scores"]["accuracy"] == 1.0
    # genrun-score changes the policy without asking the model again
    rescored = command("genrun.commands.score", str(tmp_path / "letter"), "scoring.choice_policy=strict")
    assert rescored.returncode == 0, rescored.stderr
    assert read_jsonl(tmp_path / "letter" / "answers.jsonl")[0]["extracted"] is None

"""genrun-compare A B --explain: why two runs' scores differ. Three questions, each answered
with counts and the first rows: which settings differ (run.json: the config, the model and
its chat template's hash, package versions); whether the prompts were the same (as genrun
built them, and as the engine rendered them, by the records' prompt_sha256); and where, with
the same prompts and greedy decoding, the answers still differ (the engine, its version or
dtype)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from genrun.errors import UserError
from genrun.reports.compare import saved_run
from genrun.rundir.journal import read_records
from genrun.settings import dotted

# run.json keys that say when or how a run was started, not what it computed
NOT_SETTINGS = ("started_at", "finished_at", "command", "cache", "rescored", "batch_export")
# what a record keeps of the prompt genrun built (the conversation sent, when record_messages=true)
BUILT = ("prompt", "messages", "images", "fewshot_ids", "messages_sent")
SHOWN = 3  # rows shown of each difference
DIFF_LINES = 400  # lines of each text compared for the shown difference: difflib's time grows with their square


def settings_differ(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    flat_a = dotted({k: v for k, v in a.items() if k not in NOT_SETTINGS})
    flat_b = dotted({k: v for k, v in b.items() if k not in NOT_SETTINGS})
    return [{"key": key, "a": flat_a.get(key), "b": flat_b.get(key)} for key in sorted({*flat_a, *flat_b})
            if flat_a.get(key) != flat_b.get(key)]


def kept(run: Path) -> dict[str, dict[str, Any]]:
    """Each record's prompt, rendered-prompt digest and answer, by id."""
    answers = run / "answers.jsonl" if run.is_dir() else run
    if not answers.is_file():
        raise UserError(f"{run}: no answers.jsonl (give a run directory)")
    fields = (*BUILT, "index", "prompt_sha256", "prompt_rendered", "answer", "error")
    return {json.dumps(r.get("id")): {k: r[k] for k in fields if k in r} for r in read_records(answers)}


def text_of(record: dict[str, Any], rendered: bool) -> str:
    if rendered and "prompt_rendered" in record:
        return str(record["prompt_rendered"])
    built = {k: record[k] for k in BUILT if k in record}
    return built["prompt"] if list(built) == ["prompt"] and isinstance(built["prompt"], str) else json.dumps(
        built, indent=1, ensure_ascii=False)


def difference(a: str, b: str, lines: int = 12) -> list[str]:
    """The lines that differ, as a unified diff without context."""
    a_lines, b_lines = a.splitlines()[:DIFF_LINES], b.splitlines()[:DIFF_LINES]  # a model's answer may be huge
    diff = [line for line in list(difflib.unified_diff(a_lines, b_lines, "A", "B", n=0, lineterm=""))[2:]
            if not line.startswith("@@")]
    return diff[:lines] + ([f"... {len(diff) - lines} more lines"] if len(diff) > lines else [])


def greedy(run: dict[str, Any]) -> bool:
    sampling = (run.get("config") or {}).get("sampling") or {}
    return sampling.get("temperature") == 0 or sampling.get("temperature") == 0.0


def explain(run_a: Path, run_b: Path) -> dict[str, Any]:
    a, b = saved_run(run_a), saved_run(run_b)
    rows_a, rows_b = kept(run_a), kept(run_b)
    shared = sorted((i for i in rows_a if i in rows_b), key=lambda i: rows_a[i].get("index", 0))  # in row order
    built = [i for i in shared if text_of(rows_a[i], False) != text_of(rows_b[i], False)]
    digests = [i for i in shared if "prompt_sha256" in rows_a[i] and "prompt_sha256" in rows_b[i]]
    rendered = [i for i in digests if rows_a[i]["prompt_sha256"] != rows_b[i]["prompt_sha256"]]
    result: dict[str, Any] = {
        "settings": settings_differ(a, b), "rows": len(shared),
        "only_a": len(rows_a) - len(shared), "only_b": len(rows_b) - len(shared),
        "built_prompts_differ": len(built), "built_first": [first(i, rows_a, rows_b, False) for i in built[:SHOWN]],
        "rendered_compared": len(digests), "rendered_prompts_differ": len(rendered),
        "rendered_first": [first(i, rows_a, rows_b, True) for i in rendered[:SHOWN]]}
    if greedy(a) and greedy(b):  # the same prompt, greedy: the same answer unless the engine differs
        same_prompt = [i for i in shared if i not in set(built) and i not in set(rendered)]
        answers = [i for i in same_prompt if rows_a[i].get("answer") != rows_b[i].get("answer")]
        result.update(greedy_same_prompt=len(same_prompt), greedy_answers_differ=len(answers),
                      greedy_first=[{"id": json.loads(i), "diff": difference(str(rows_a[i].get("answer")),
                                                                             str(rows_b[i].get("answer")))}
                                    for i in answers[:SHOWN]])
    return result


def first(key: str, rows_a: dict[str, dict[str, Any]], rows_b: dict[str, dict[str, Any]],
          rendered: bool) -> dict[str, Any]:
    a, b = rows_a[key], rows_b[key]
    shown = {"id": json.loads(key)}
    if rendered and not ("prompt_rendered" in a and "prompt_rendered" in b):
        shown["note"] = "the rendered text is kept with record_messages=true; here only its digest"
        return shown
    shown["diff"] = difference(text_of(a, rendered), text_of(b, rendered))
    return shown


def short(value: Any, width: int = 70) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def report(result: dict[str, Any]) -> list[str]:
    """The explanation as the lines genrun-compare prints."""
    lines = [f"settings that differ (run.json): {len(result['settings']) or 'none'}"]
    lines += [f"  {s['key']}: A {short(s['a'])}, B {short(s['b'])}" for s in result["settings"]]
    rows = result["rows"]
    if result["only_a"] or result["only_b"]:
        lines.append(f"rows: {rows} in both, {result['only_a']} only in A, {result['only_b']} only in B")
    lines.append("prompts as genrun built them: " + (f"identical on all {rows} rows" if not result[
        "built_prompts_differ"] else f"differ on {result['built_prompts_differ']} of {rows} rows"))
    lines += shown_rows(result["built_first"])
    if result["rendered_compared"]:
        count = result["rendered_prompts_differ"]
        lines.append("prompts as the engine rendered them (chat template applied): " + (
            f"identical on all {result['rendered_compared']} rows" if not count else
            f"differ on {count} of {result['rendered_compared']} rows"))
        lines += shown_rows(result["rendered_first"])
    else:
        lines.append("prompts as the engine rendered them: not recorded (a server renders them; local engines do)")
    if "greedy_answers_differ" in result and not result["greedy_same_prompt"]:
        lines.append("greedy answers: no row has the same prompt in both runs to compare them on")
    elif "greedy_answers_differ" in result:
        lines.append(f"greedy answers to the same prompts: differ on {result['greedy_answers_differ']} of "
                     f"{result['greedy_same_prompt']} rows" + (" (the engine, its version or dtype)"
                                                                if result["greedy_answers_differ"] else ""))
        lines += shown_rows(result["greedy_first"])
    return lines


def shown_rows(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        lines.append(f"  row id {json.dumps(row['id'])}:" + (f" {row['note']}" if "note" in row else ""))
        lines += [f"    {line}" for line in row.get("diff", [])]
    return lines

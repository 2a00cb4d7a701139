"""Local files of every supported type, folders, limits, and clear errors."""

from __future__ import annotations

import json

import pytest

from conftest import open_dataset as open_rows
from genrun.errors import UserError

ROWS = [{"q": f"question {i}", "a": [str(i)]} for i in range(10)]


def config(path, **overrides):
    fields = {"id": None, "prompt": "q", "images": None, "messages": None, "reference": None}
    return {"path": str(path), "split": "train", "streaming": True, "limit": None, "fields": fields, **overrides}


@pytest.fixture(params=["jsonl", "json", "csv", "parquet"])
def data_file(request, tmp_path):
    import pandas as pd

    frame = pd.DataFrame([{"q": r["q"], "a": r["a"][0]} for r in ROWS])
    path = tmp_path / f"data.{request.param}"
    if request.param == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif request.param == "json":
        path.write_text(json.dumps(frame.to_dict(orient="records")))
    elif request.param == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("streaming", [True, False])
def test_every_file_type_streams_in_order(data_file, streaming) -> None:
    rows = open_rows(config(data_file, streaming=streaming), "generate")
    got = list(rows.rows)
    assert [i for i, _ in got] == list(range(10))
    assert [r["q"] for _, r in got] == [r["q"] for r in ROWS]
    assert rows.info["fingerprint"]


def test_folder_limit_and_shards(tmp_path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for part in range(2):
        (folder / f"part{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[part * 5:(part + 1) * 5]))
    assert [i for i, _ in open_rows(config(folder), "generate").rows] == list(range(10))
    limited = open_rows(config(folder, limit=3), "generate")
    assert [i for i, _ in limited.rows] == [0, 1, 2] and limited.total == 3


@pytest.mark.parametrize("cfg_change,mode,message", [
    ({"path": "/no/such/file.jsonl"}, "generate", "no such file or folder"),
    ({"fields": {"prompt": "question"}}, "generate", "dataset.fields.prompt='question' is not a column"),
    ({"fields": {"prompt": "q", "reference": "answer"}}, "generate", "columns: q, a"),
    ({"fields": {"prompt": "q", "messages": None}}, "multiturn", "dataset.fields.messages is not set"),
])
def test_clear_errors(tmp_path, cfg_change, mode, message) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with pytest.raises(UserError, match=message):
        open_rows({**config(path), **cfg_change}, mode)

"""A new backend is one file and one config file, with nothing else edited: the README's
"Adding a backend", followed to the letter. The echo backend's file is put beside genrun's
backends (on the package's path) and its YAML on Hydra's search path; then the CLI, a resume
and the Python API use it like any other backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import read_jsonl, write_jsonl

ECHO_BACKEND = '''
from genrun.backend.base import Backend, Completion, check_extra
from genrun.backend.sampling import check_sampling


class EchoBackend(Backend):
    name = "echo"
    operational = frozenset({"batch_size"})

    def __init__(self, prefix: str, sampling=None, extra=None, seed=None, batch_size: int = 2,
                 shout: bool = False) -> None:
        check_sampling(sampling)
        check_extra(extra, self.name)
        self.prefix, self.batch_size, self.shout = prefix, batch_size, shout

    async def generate_batch(self, conversations):
        texts = [f"{self.prefix} {c[-1]['content']}" for c in conversations]
        return [Completion(answer=t.upper() if self.shout else t) for t in texts]
'''

DRIVER = '''
import sys
import genrun.backend

genrun.backend.__path__.append(sys.argv[1])  # where the new backend's file was put
if sys.argv[2] == "cli":
    from genrun.cli import main

    sys.argv = ["genrun", *sys.argv[3:]]
    main()
else:
    import asyncio, json, genrun

    genrun.generation_init({"echo": {"prefix": "api:"}}, {"temperature": 0.0}, backend="echo")
    print(json.dumps(asyncio.run(genrun.generate(["hi", "there"]))))
    try:
        genrun.generation_init({"echo": {"prefx": "x"}}, {}, backend="echo")
    except genrun.errors.UserError as exc:
        print(exc)
'''


def test_a_backend_added_as_one_file_and_one_yaml_runs_everywhere(tmp_path: Path) -> None:
    code, conf = tmp_path / "code", tmp_path / "conf" / "backend"
    code.mkdir()
    conf.mkdir(parents=True)
    (code / "echo.py").write_text(ECHO_BACKEND)
    (conf / "echo.yaml").write_text("defaults:\n  - base_echo\n  - _self_\n\nprefix: 'echo:'\n")
    (tmp_path / "driver.py").write_text(DRIVER)
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"row {i}"} for i in range(5)])
    out = tmp_path / "run"

    def driver(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(code), *args],
                              capture_output=True, text=True, timeout=120)

    cli = ("cli", "backend=echo", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "dataset=default",
           f"dataset.path={data}", f"hydra.run.dir={out}")
    result = driver(*cli, "dataset.limit=3")
    assert result.returncode == 0, result.stderr
    assert [r["answer"] for r in read_jsonl(out / "answers.jsonl")] == [f"echo: row {i}" for i in range(3)]
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["config"]["backend"] == {"_target_": "genrun.backend.echo.EchoBackend", "prefix": "echo:",
                                             "shout": False}  # batch_size is operational

    # resume: an operational setting may change, an answer-changing one may not
    result = driver(*cli, "backend.batch_size=4")
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out / "answers.jsonl")) == 5
    result = driver(*cli, "backend.shout=true")
    assert result.returncode == 2 and "backend.shout: False then, True now" in result.stderr
    # the schema made from the signature checks types and names
    result = driver(*cli, "backend.batch_size=two")
    assert result.returncode == 2 and "backend.batch_size=two" in result.stderr
    assert "Traceback" not in result.stderr

    result = driver("api")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert json.loads(lines[0]) == {"ans_ls": ["api: hi", "api: there"], "errors": [None, None]}
    assert lines[1].startswith("backend_configs.echo.prefx is not a setting of the echo backend")

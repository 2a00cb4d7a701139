"""`code_pass`: the program a row runs, made of the model's code and the row's tests.

The code is the answer's last fenced block (```python ... ``` or ``` ... ```), or the whole
answer when it has none (`scoring.code_from=fence`), or always the whole answer
(`code_from=answer`, for base models that continue a prompt). The reference holds the tests
as the benchmark defines them (a preset's reference_template builds them from the row): the
line `# genrun: code` in it is replaced by the code; a reference without that line runs after
the code. The program passes when it exits 0 (HumanEval's rule).
"""

from __future__ import annotations

import re

from genrun.errors import UserError
from genrun.scoring.metrics import strip_thinking

CODE_MARK = "# genrun: code"
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
CODE_FROM = ("fence", "answer")


def code_of(answer: str, code_from: str) -> str:
    if code_from not in CODE_FROM:
        raise UserError(f"scoring.code_from={code_from!r}: choose fence or answer")
    text, _ = strip_thinking(answer)
    if code_from == "answer":
        return text
    blocks = FENCE.findall(text)
    return blocks[-1][1] if blocks else text


def program(answer: str, reference: str, code_from: str = "fence") -> str:
    code = code_of(answer, code_from)
    lines = reference.split("\n")
    if CODE_MARK in (line.strip() for line in lines):
        return "\n".join(code if line.strip() == CODE_MARK else line for line in lines)
    return f"{code}\n\n{reference}"

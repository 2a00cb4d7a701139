"""A backend that answers at once, to measure genrun's own cost per row (bench/ceiling.py).
It is one file, as the README's "Adding a backend" says: bench/ceiling.py puts this folder on
genrun.backend's path, so it is `backend=base_instant`."""

from __future__ import annotations

from genrun.backend.base import Backend, Completion, check_extra
from genrun.backend.sampling import check_sampling


class InstantBackend(Backend):
    name = "instant"
    operational = frozenset({"batch_size"})

    def __init__(self, sampling=None, extra=None, seed=None, batch_size: int = 256) -> None:
        self.samples = check_sampling(sampling).get("n", 1)
        check_extra(extra, self.name)
        self.batch_size = batch_size

    async def generate_batch(self, conversations, seeds=None):
        return [self.answer(c[-1]["content"] if isinstance(c, list) else c) for c in conversations]

    def answer(self, prompt: str) -> Completion:
        text = f"The answer is {prompt[-6:]}"  # a short answer that differs by row
        if self.samples == 1:
            return Completion(answer=text, finish_reason="stop", prompt_tokens=len(prompt) // 4, completion_tokens=6)
        return Completion.of_samples([Completion(answer=f"{text}{'!' * k}", finish_reason="stop",
                                                 prompt_tokens=len(prompt) // 4, completion_tokens=6)
                                      for k in range(self.samples)])

"""Prompt building: a dataset row into the chat messages a backend answers (a Request). The
modes (generate, multimodal, multiturn), message shapes, templates, images and few-shot
examples.

May use: genrun.dataset (few-shot sources), genrun.backend.base (the Messages contract),
genrun.settings (its slices), genrun.errors.
"""

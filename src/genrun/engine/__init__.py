"""The engine: one job as named steps (job.py), how its rows get answers (delivery.py: online,
a Batch job, a Batch file, an export), the scheduler that keeps a backend busy with retries,
the Batch API files, judging, running code_pass's programs, and the progress line.

May use: every package below the faces (reports excepted): rundir, scoring, prompt, dataset,
settings, backend, assets, errors, credentials.
"""

"""The run directory: answers.jsonl (the journal, one record per row, written exactly once),
its checked index and running tally (with its breakdown: truncated rows, groups, clusters),
the judge's verdicts until they are merged, metrics.json, run.json, the lock that keeps one
writer, resume's checks, and the end-to-end check.

May use: genrun.scoring (a record's scores, the intervals), genrun.prompt (the Request a
record is made from), genrun.backend (Completion), genrun.dataset (a dataset's fingerprint),
genrun.errors, genrun.credentials.
"""

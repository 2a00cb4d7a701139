"""Reports over finished runs: sweep summaries (summary.csv, .md, .png), paired comparisons of
two runs or of many against a reference (Holm and BH adjusted), why two runs differ
(explain.py), and the merge of sharded runs' answers.

May use: genrun.rundir (reading records and indexes), genrun.scoring (the statistics),
genrun.errors.
"""

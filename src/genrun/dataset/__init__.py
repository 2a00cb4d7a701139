"""Datasets: rows streamed from a Hugging Face dataset (a hub id, or local jsonl/json/parquet/csv
files), checked as they are read, and the plain line-by-line readers that name a broken
file's bad line.

May use: genrun.errors, genrun.settings (its DatasetConfig), the datasets library.
"""

from genrun.dataset.source import Rows, fingerprint, image_base_dir, load_checked, local_files, open_rows

__all__ = ["Rows", "fingerprint", "image_base_dir", "load_checked", "local_files", "open_rows"]

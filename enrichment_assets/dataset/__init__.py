"""The training dataset: what a fine-tuning job consumes (no Dagster imports here).

- `near_duplicates.py`: MinHash LSH (rensa) over word shingles, first of each cluster kept;
- `build.py`: the current completed conversations of the lake, filtered, deduplicated
  (exactly by normalized content hash, then near-duplicates), split train/validation by
  hash, with the provenance of every line, staged as one Parquet file;
- `publish.py`: the staged lines written as `export/dataset/<name>/` files, each replaced
  only when its bytes change.
"""

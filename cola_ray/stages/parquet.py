"""Parquet corpus files read row group by row group (issue 12 and 14).

Why not Ray's read_parquet: a file whose footer is whole but one of its later row groups is
damaged (a bad sector, an interrupted copy patched up, a writer that crashed) fails inside
Ray's reader task with pyarrow's message and no file or position, and there is no way to keep
the row groups before the damage. So each reading task opens one file and yields its row groups
in turn (memory per task: one row group), and a row group that does not decode fails the run
with the file and row group named, or, with --skip-bad-files, ends that file there with a note
(lines.note_skipped) that the manifest lists.
"""

from __future__ import annotations

import pyarrow as pa

from cola_ray import storage
from cola_ray.errors import UserError
from cola_ray.stages.lines import note_skipped


def read_parquet(batch: pa.Table, skip_to: str | None = None):
    """A table of uris -> each file's records, one table per row group, with a `path` column."""
    import pyarrow.parquet as pq

    for uri in batch.column("uri").to_pylist():
        uri = str(uri)
        fs, path = storage.filesystem(uri)
        kept, group, groups = 0, 0, "?"
        try:
            with fs.open_input_file(path) as f:
                reader = pq.ParquetFile(f)
                groups = reader.num_row_groups
                for group in range(groups):
                    table = reader.read_row_group(group)
                    kept += table.num_rows
                    yield table.append_column("path", pa.array([uri] * table.num_rows, pa.string()))
        except (OSError, pa.ArrowException) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            note_skipped(skip_to, uri, kept, UserError(
                f"--corpus {uri}: unreadable or corrupt parquet file at row group {group} of {groups} "
                f"(after record {kept}) ({reason})"))


def count_records(uris: list[str]) -> int:
    """Records in parquet files, from their footers (no data read)."""
    import pyarrow.parquet as pq
    from concurrent.futures import ThreadPoolExecutor

    def rows(uri: str) -> int:
        fs, path = storage.filesystem(uri)
        with fs.open_input_file(path) as f:
            return pq.read_metadata(f).num_rows

    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(rows, uris))

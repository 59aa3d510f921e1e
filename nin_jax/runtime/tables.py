"""Results tables: rows of values as Markdown (to read) and CSV (to load elsewhere).

The sweep report (nin_jax/research/sweep_report.py) and the head ablation
(nin_jax/research/ablation.py) write their tables here. Files go through
etils.epath and `storage.write_atomic`, so a table may be local or in a bucket,
and a reader never sees half of one.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence

from etils import epath

from nin_jax.runtime import storage


def cell_text(value: Any) -> str:
  """A value as a table cell shows it: floats to 4 significant digits, None empty."""
  if isinstance(value, float):
    return f'{value:.4g}'
  return '' if value is None else str(value)


def markdown(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = '') -> str:
  """The rows as a Markdown table, `title` (a paragraph) above it."""
  def cell(v):
    return cell_text(v).replace('|', '\\|').replace('\n', ' ')
  lines = ([f'{title}\n'] if title else []) + [
      '| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def csv_text(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """The rows as CSV, at full precision (None is an empty field)."""
  buffer = io.StringIO(newline='')
  writer = csv.writer(buffer)
  writer.writerow(columns)
  writer.writerows([['' if v is None else v for v in row] for row in rows])
  return buffer.getvalue()


def write_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                md_path: epath.PathLike | None = None, csv_path: epath.PathLike | None = None,
                title: str = '') -> None:
  """The rows as a Markdown file and/or a CSV file (the title goes to Markdown only)."""
  if csv_path is not None:
    storage.write_atomic(epath.Path(csv_path), csv_text(columns, rows))
  if md_path is not None:
    storage.write_atomic(epath.Path(md_path), markdown(columns, rows, title))

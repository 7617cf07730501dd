"""A table as Markdown: the one helper the reports (results.md) and the trackers (a comparison's table in
TensorBoard) share."""
from __future__ import annotations

import pandas as pd


def markdown(df: pd.DataFrame) -> str:
    """`df` as a GitHub Markdown table: a header row, a rule, one line per row; missing values (NaN, None) empty."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if v is None or v != v else str(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)

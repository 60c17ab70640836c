"""How numbers read in sentences and tables: the one set of formatters the claims' reasons,
report.md, the overview and the console share.

Sentences (a claim's reasons, verdict.json) write a missing number as "n/a"; table cells as "-".
A p-value reads with two significant digits from 1e-4 up and in exponent form below; a p of
exactly 0 (a t statistic beyond the floats) reads "< 1e-300".
"""

from __future__ import annotations

import math

from l2reg import axes

SENTENCE_MISSING = "n/a"
CELL_MISSING = "-"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value)) or value != value


def number(value, digits: int = 3, signed: bool = True) -> str:
    """A number in a sentence: `+0.123` (signed) or `0.123`; "n/a" when missing or infinite."""
    if _missing(value) or not math.isfinite(float(value)):
        return SENTENCE_MISSING
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def cell(value, digits: int = 3, signed: bool = False) -> str:
    """A table cell: floats with `digits` decimals, anything else as written; "-" when missing."""
    if value is None or (isinstance(value, float) and value != value):
        return CELL_MISSING
    if isinstance(value, float) or type(value).__name__.startswith("float"):  # numpy floats too
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def p_value(value, missing: str = SENTENCE_MISSING) -> str:
    """A p-value: "0.012", "3.4e-07", "< 1e-300" for 0; `missing` when there is no test (NaN/None)."""
    if _missing(value):
        return missing
    if value == 0:
        return "< 1e-300"
    return f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"


def p_cell(value) -> str:
    """A p-value in a table cell ("-" without a test)."""
    return p_value(value, CELL_MISSING)


def interval(low, high, digits: int = 3) -> str:
    """A CI in a table cell: `[-0.012, +0.034]`, "-" when missing."""
    return CELL_MISSING if low is None or low != low else f"[{cell(low, digits, True)}, {cell(high, digits, True)}]"


def markdown_table(frame) -> str:
    """A pandas DataFrame as a markdown table, cells kept as written ("+0.200" stays so)."""
    return frame.to_markdown(index=False, disable_numparse=True)


def axis_value(column: str, value) -> str:
    """`alpha=0.0001`, not a float repr: numbers are written with :g, the other values as they are."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{column}={value:g}" if numeric or column == "alpha" else f"{column}={value}"


def setting_name(row, varying: list[str]) -> str:
    """A setting named by the axes that vary in its table (`target=both alpha=0.001`); the baseline
    by its name."""
    if axes.baseline_rows(row):
        return "baseline"
    return " ".join(axis_value(column, row[column]) for column in varying)

"""Number formatting shared by reports, the CLI and benchmarks."""

from __future__ import annotations

import numbers

__all__ = ["format_value"]


def format_value(v) -> str:
    """Compact human form: ints as is, floats with 4 significant digits."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        x = float(v)
        if x == 0:
            return "0"
        if 1e-3 <= abs(x) < 1e5:
            return f"{x:.4g}"
        return f"{x:.3e}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    return str(v)

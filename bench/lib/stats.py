"""The numbers of the result tables: formatting, ratios, spreads, percentiles."""

import statistics


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return f"{a / b:.2f}"
    return "—"


def spread(values):
    """(max - min) / median, as a percentage."""
    if len(values) < 2:
        return "—"
    med = statistics.median(values)
    return f"{(max(values) - min(values)) / med * 100:.0f}%" if med else "—"


def pct(values, q):
    """The q-quantile (0..1) of `values` (nearest rank), NaN when there are none."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def ms(v):
    return "—" if v is None else (f"{v * 1000:,.0f} ms" if v >= 1 else f"{v * 1000:.1f} ms" if v >= 0.01 else f"{v * 1000:.2f} ms")

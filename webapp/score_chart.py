"""The score board's bar chart, as geometry that the template draws as SVG."""

from dataclasses import dataclass

# The shortest bar of a score that is not zero, in hundredths of the chart's width.
MIN_BAR_WIDTH = 2.0


@dataclass(frozen=True)
class Bar:
    """One bar of a chart, in the chart's coordinates: x and width from 0 to 100."""

    x: float
    width: float
    negative: bool


@dataclass(frozen=True)
class BarChart:
    """Bars for some scores from one zero line, at `zero` (from 0 to 100)."""

    zero: float
    bars: tuple


def bar_chart(values):
    """Chart scores as bars from one zero line, scaled so that zero and every score fit the width."""
    low, high = min(0.0, *values), max(0.0, *values)
    zero = (0.0 - low) / ((high - low) or 1.0) * 100
    # However small beside the others, a score that is not zero keeps room for a visible bar.
    zero = round(min(max(zero, MIN_BAR_WIDTH if low < 0 else 0.0),
                     100 - MIN_BAR_WIDTH if high > 0 else 100.0), 2)
    bars = []
    for value in values:
        room, extreme = (100 - zero, high) if value > 0 else (zero, low)
        width = round(max(value / extreme * room, MIN_BAR_WIDTH), 2) if value else 0.0
        x = round(zero - width, 2) if value < 0 else zero
        bars.append(Bar(x, width, value < 0))
    return BarChart(zero, tuple(bars))

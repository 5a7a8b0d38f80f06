"""Charts for the PDF and HTML reports, laid out here as shapes (report.drawing paints them).

These were drawn with matplotlib until issue 19: importing it and laying out a handful of bar charts
took more CPU than both reports' pages together, while a chart of this kind is a few dozen rectangles,
lines and labels. Labels can come from the log (client addresses): control characters are shown as
escapes, long labels clipped, and the SVG painter escapes text as XML.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from log_analyser_core.report import drawing
from log_analyser_core.report.drawing import Drawing, Line, Rect, Text, ascent, text_width
from log_analyser_core.report.model import attack_type_counts, country_counts, status_counts, timeline
from log_analyser_core.report.text import terminal_safe
from log_analyser_core.results import AnalysisResult, flagged_findings

LABEL_CHARS = 40
LABEL_SHARE = 0.5     # most of a bar chart's width its labels take; longer ones are cut to fit
FONT = 9.0            # points: tick labels, axis labels, legend
TITLE = 10.8          # points
PAD = 4.0             # points around the chart and between its parts
TICK = 3.5            # tick length and the gap between a tick and its label
MARGIN = 0.05         # share of the data range left free at each side of the time axis
# time-axis tick steps in seconds (months and years are calendar steps) and the strftime format of each scale
SECOND_STEPS = (1, 5, 10, 15, 30)
MINUTE_STEPS = (60, 300, 600, 900, 1800)
HOUR_STEPS = (3600, 2 * 3600, 3 * 3600, 4 * 3600, 6 * 3600, 12 * 3600)
DAY_STEPS = (1, 2, 7, 14)
MONTH_STEPS = (1, 2, 3, 6)
YEAR_STEPS = (1, 2, 5, 10, 20, 50, 100)
MAX_TIME_TICKS = 12


@dataclass(frozen=True)
class Theme:
    background: str
    text: str
    grid: str
    accent: str      # ordinary traffic
    alert: str       # flagged clients


LIGHT = Theme(background="#ffffff", text="#222222", grid="#dddddd", accent="#4a7ab5", alert="#d9363e")
DARK = Theme(background="#161b22", text="#c9d1d9", grid="#30363d", accent="#3b82c4", alert="#ff5c5c")


@dataclass(frozen=True)
class Chart:
    """A laid-out chart: its title and time-axis tick labels (for tests and alt text) and its drawing."""
    title: str
    ticks: tuple[str, ...]
    drawing: Drawing


def _clip(label: str) -> str:
    """A chart label as safe text: control characters as visible escapes (XML 1.0 cannot hold
    ESC, even as a character reference, so one would break the SVG), clipped to LABEL_CHARS with
    an ellipsis."""
    label = terminal_safe(label)
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def _fit(label: str, room: float) -> str:
    """``label``, cut with an ellipsis until it fits ``room`` points (with the fallback-font slack)."""
    while len(label) > 1 and text_width(label, FONT) * drawing.TEXT_SLACK > room:
        label = label[:-2] + "…"
    return label


def _value_ticks(top: float, bins: int) -> list[float]:
    """Whole-number ticks from 0 at a step of 1, 2 or 5 times a power of ten, at most ``bins`` steps
    up to ``top`` (as matplotlib's MaxNLocator with integer=True)."""
    top = max(top, 1.0)
    magnitude = 10 ** math.floor(math.log10(top / bins))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= 1 and m * magnitude * bins >= top)
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def _value_label(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,g}"


def _frame(theme: Theme, left: float, top: float, right: float, bottom: float) -> list:
    """The left and bottom axis lines (the top and right ones are left out)."""
    return [Line(left, top, left, bottom, theme.grid), Line(left, bottom, right, bottom, theme.grid)]


def bar_chart(items: Sequence[tuple[str, float]], title: str, colour: str, theme: Theme = LIGHT,
              size=(4.0, 2.8), xlabel: str = "") -> Chart:
    """Horizontal bars, first item on top, values on a grid of whole numbers; an empty chart says
    'none'. ``size`` is in inches."""
    width, height = size[0] * 72, size[1] * 72
    shapes: list = [Text(PAD, PAD + ascent(TITLE), title, TITLE, theme.text)]
    top = PAD + ascent(TITLE) + 2 * PAD + TICK
    if not items:
        shapes.append(Text(width / 2, (top + height) / 2, "none", FONT, theme.text, "middle"))
        return Chart(title, (), Drawing(width, height, theme.background, tuple(shapes)))
    labels = [_fit(_clip(str(label)), width * LABEL_SHARE) for label, _ in items]
    values = [float(value) for _, value in items]
    left = PAD + max(text_width(label, FONT) for label in labels) * drawing.TEXT_SLACK + 2 * TICK
    widest = text_width(_value_label(max(values) * 10), FONT) * drawing.TEXT_SLACK + 2 * PAD
    ticks = _value_ticks(max(values) * (1 + MARGIN), max(1, min(5, int((width - left) / widest))))
    tick_labels = [_value_label(t) for t in ticks]
    right = width - max(PAD, text_width(tick_labels[-1], FONT) * drawing.TEXT_SLACK / 2 + 1)
    bottom = height - PAD - (FONT * 1.2 + PAD if xlabel else 0) - FONT * 1.2 - 2 * TICK
    span = max(max(values) * (1 + MARGIN), ticks[-1])
    x = lambda value: left + (right - left) * value / span   # noqa: E731 - a scale, read as one
    for tick, label in zip(ticks, tick_labels, strict=True):
        shapes += [Line(x(tick), top, x(tick), bottom, theme.grid),
                   Line(x(tick), bottom, x(tick), bottom + TICK, theme.text),
                   Text(x(tick), bottom + 2 * TICK + ascent(FONT), label, FONT, theme.text, "middle")]
    band = (bottom - top) / len(items)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        middle = top + band * (i + 0.5)
        shapes += [Rect(left, middle - band * 0.4, x(value) - left, band * 0.8, colour),
                   Line(left - TICK, middle, left, middle, theme.text),
                   Text(left - 2 * TICK, middle + ascent(FONT) / 2, label, FONT, theme.text, "end")]
    shapes += _frame(theme, left, top, right, bottom)
    if xlabel:
        shapes.append(Text((left + right) / 2, height - PAD - FONT * 0.25, xlabel, FONT, theme.text, "middle"))
    return Chart(title, (), Drawing(width, height, theme.background, tuple(shapes)))


def timeline_chart(result: AnalysisResult, theme: Theme = LIGHT, size=(8.0, 2.8)) -> Chart:
    """Requests per time bucket, flagged clients stacked in the alert colour on the rest; the time
    axis in the result's display zone. ``size`` is in inches."""
    frame, bucket = timeline(result)
    tz = result.summary.tz
    title = f"Requests over time ({tz}, per {_bucket_label(bucket)})"
    width, height = size[0] * 72, size[1] * 72
    shapes: list = [Text(PAD, PAD + ascent(TITLE), title, TITLE, theme.text)]
    top = max(PAD + ascent(TITLE) + 2 * PAD + TICK, _legend(shapes, theme, width, title))
    starts = frame["bucket"].dt.epoch("s").to_list() if frame.height else []
    other, flagged = frame["other"].to_list(), frame["flagged"].to_list()
    counts = [a + b for a, b in zip(other, flagged, strict=True)]
    ticks = _value_ticks(max(counts, default=0) * (1 + MARGIN), max(2, min(9, int((height - top) / 27))))
    tick_labels = [_value_label(t) for t in ticks]
    left = PAD + FONT * 1.2 + PAD + max(text_width(t, FONT) for t in tick_labels) * drawing.TEXT_SLACK + 2 * TICK
    right, bottom = width - PAD - 12, height - PAD - FONT * 1.2 - 2 * TICK
    span = max(max(counts, default=0) * (1 + MARGIN), ticks[-1])
    y = lambda value: bottom - (bottom - top) * value / span   # noqa: E731 - a scale, read as one
    for tick, label in zip(ticks, tick_labels, strict=True):
        shapes += [Line(left, y(tick), right, y(tick), theme.grid),
                   Line(left - TICK, y(tick), left, y(tick), theme.text),
                   Text(left - 2 * TICK, y(tick) + ascent(FONT) / 2, label, FONT, theme.text, "end")]
    shapes.append(Text(PAD + ascent(FONT), (top + bottom) / 2, "requests", FONT, theme.text, "middle",
                       vertical=True))
    time_labels: tuple[str, ...] = ()
    if starts:
        first, last = starts[0], starts[-1] + bucket * 0.9
        low, high = first - (last - first) * MARGIN, last + (last - first) * MARGIN
        if high <= low:
            low, high = first - bucket, last + bucket
        t = lambda seconds: left + (right - left) * (seconds - low) / (high - low)   # noqa: E731
        time_labels = _time_axis(shapes, theme, t, _time_ticks(low, high, tz, right - left), top, bottom)
        bar = (right - left) * bucket * 0.9 / (high - low)
        for start, rest, hits in zip(starts, other, flagged, strict=True):
            if rest:
                shapes.append(Rect(t(start), y(rest), bar, y(0) - y(rest), theme.accent))
            if hits:
                shapes.append(Rect(t(start), y(rest + hits), bar, y(rest) - y(rest + hits), theme.alert))
    shapes += _frame(theme, left, top, right, bottom)
    return Chart(title, time_labels, Drawing(width, height, theme.background, tuple(shapes)))


def _time_axis(shapes: list, theme: Theme, x, marks: list[tuple[float, str]], top: float,
               bottom: float) -> tuple[str, ...]:
    """Grid line, tick and label of each (Unix seconds, label) in ``marks``, ``x`` the time scale;
    returns the labels."""
    for at, label in marks:
        shapes += [Line(x(at), top, x(at), bottom, theme.grid), Line(x(at), bottom, x(at), bottom + TICK, theme.text),
                   Text(x(at), bottom + 2 * TICK + ascent(FONT), label, FONT, theme.text, "middle")]
    return tuple(label for _, label in marks)


def _legend(shapes: list, theme: Theme, width: float, title: str) -> float:
    """'other clients' and 'flagged clients' with their colours, at the top right: on the title's line
    when both fit, else on a line of its own. Returns the top of the plot below it."""
    entries = (("other clients", theme.accent), ("flagged clients", theme.alert))
    widths = [FONT + PAD + text_width(label, FONT) * drawing.TEXT_SLACK for label, _ in entries]
    total = sum(widths) + 3 * PAD
    baseline = PAD + ascent(TITLE)
    if text_width(title, TITLE) * drawing.TEXT_SLACK + total + 4 * PAD > width:
        baseline += FONT * 1.4
    x = width - PAD - total
    for (label, colour), entry in zip(entries, widths, strict=True):
        shapes += [Rect(x, baseline - FONT * 0.7, FONT, FONT * 0.7, colour), Text(x + FONT + PAD, baseline, label,
                                                                                 FONT, theme.text)]
        x += entry + 3 * PAD
    return baseline + 2 * PAD + TICK


def _bucket_label(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} day" + ("s" if seconds > 86400 else "")
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"


def _time_ticks(low: float, high: float, tz: str, room: float) -> list[tuple[float, str]]:
    """Ticks on the time axis from ``low`` to ``high`` (Unix seconds) at wall-clock steps in ``tz``:
    the finest step whose labels fit in ``room`` points side by side, at most MAX_TIME_TICKS. Labels
    use matplotlib's default formats for the scale ('03-10 14' for hours)."""
    zone = UTC if tz == "UTC" else ZoneInfo(tz)
    candidates = ([(s, "%H:%M:%S") for s in SECOND_STEPS] + [(s, "%d %H:%M") for s in MINUTE_STEPS]
                  + [(s, "%m-%d %H") for s in HOUR_STEPS] + [(d * 86400, "%Y-%m-%d") for d in DAY_STEPS]
                  + [(-m, "%Y-%m") for m in MONTH_STEPS] + [(-12 * y, "%Y") for y in YEAR_STEPS])
    marks: list[datetime] = []
    for step, pattern in candidates:
        marks = list(_wall_clock_ticks(low, high, zone, step, MAX_TIME_TICKS + 1))
        if not marks or len(marks) > MAX_TIME_TICKS:
            continue
        widest = max(text_width(m.strftime(pattern), FONT) for m in marks) * drawing.TEXT_SLACK + 2 * PAD
        if widest * len(marks) <= room:
            return [(m.timestamp(), m.strftime(pattern)) for m in marks]
    return [(m.timestamp(), m.strftime(candidates[-1][1])) for m in marks]


def _wall_clock_ticks(low: float, high: float, zone, step: int, most: int):
    """Aware datetimes in ``zone`` between ``low`` and ``high`` (Unix seconds) on the wall-clock grid
    of ``step``: seconds dividing a day (from local midnight), whole days (days since 1970 a multiple of
    step / 86400 from a Monday), or months (-step: months a multiple of it from January of year 0); at
    most ``most``."""
    start = datetime.fromtimestamp(low, zone).replace(tzinfo=None)
    if step < 0:   # calendar months
        months = -step
        index = start.year * 12 + start.month - 1 + (start > datetime(start.year, start.month, 1))
        index = math.ceil(index / months) * months
        stamps = (datetime((index + k * months) // 12, (index + k * months) % 12 + 1, 1) for k in itertools.count())
    elif step % 86400 == 0:   # whole days from a Monday, so that weeks start on Mondays
        days, monday = step // 86400, datetime(1970, 1, 5)
        first = monday + timedelta(days=math.ceil((start - monday) / timedelta(days=days)) * days)
        stamps = (first + timedelta(days=k * days) for k in itertools.count())
    else:
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        first = midnight + timedelta(seconds=math.ceil((start - midnight).total_seconds() / step) * step)
        stamps = (first + timedelta(seconds=k * step) for k in itertools.count())
    for naive in stamps:
        moment = naive.replace(tzinfo=zone)
        if datetime.fromtimestamp(moment.timestamp(), zone).replace(tzinfo=None) != naive:
            continue   # skipped when the clocks went forward: no tick (it would be mislabelled)
        if moment.timestamp() > high or most <= 0:
            return
        if moment.timestamp() >= low:
            most -= 1
            yield moment


def standard_charts(result: AnalysisResult, theme: Theme = LIGHT, timeline_size=(8.0, 2.8)) -> dict[str, Chart]:
    """The report's charts by name: timeline, top_ips, attack_types, status_codes, and countries
    (only when enrichment gave any client a country). Sizes are in inches."""
    top = [(f.ip, f.score) for f in flagged_findings(result.findings)][:12]
    charts = {
        "timeline": timeline_chart(result, theme, timeline_size),
        "top_ips": bar_chart(top, "Top flagged clients", theme.alert, theme, xlabel="score (0-100)"),
        "attack_types": bar_chart(attack_type_counts(result), "Primary attack type (flagged clients)", theme.alert,
                                  theme, xlabel="clients"),
        "status_codes": bar_chart(status_counts(result), "Status codes", theme.accent, theme, xlabel="requests"),
    }
    countries = country_counts(result)
    if countries:
        charts["countries"] = bar_chart(countries, "Countries (flagged clients)", theme.alert, theme,
                                        xlabel="clients")
    return charts


def to_png(chart: Chart, dpi: int = 150) -> bytes:
    return drawing.to_png(chart.drawing, dpi)


def to_image(chart: Chart, dpi: int = 150):
    """The chart as a Pillow image, for fpdf2."""
    return drawing.to_image(chart.drawing, dpi)


def to_svg(chart: Chart) -> bytes:
    return drawing.to_svg(chart.drawing)

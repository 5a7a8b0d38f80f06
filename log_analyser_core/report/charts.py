"""Charts for the PDF and HTML reports, drawn with matplotlib's object API (no pyplot, no global state).

Labels can come from the log (client addresses), so math-text parsing is off: a ``$`` in a label is
drawn, never interpreted. SVG output draws text as paths and carries no date, so it is deterministic.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from log_analyser_core.errors import MissingExtraError
from log_analyser_core.report.model import attack_type_counts, country_counts, status_counts, timeline
from log_analyser_core.report.text import terminal_safe
from log_analyser_core.results import AnalysisResult

LABEL_CHARS = 40


@dataclass(frozen=True)
class Theme:
    background: str
    text: str
    grid: str
    accent: str      # ordinary traffic
    alert: str       # flagged clients


LIGHT = Theme(background="#ffffff", text="#222222", grid="#dddddd", accent="#4a7ab5", alert="#d9363e")
DARK = Theme(background="#161b22", text="#c9d1d9", grid="#30363d", accent="#3b82c4", alert="#ff5c5c")


def matplotlib_module():
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("the charts of the PDF and HTML reports", "report", "matplotlib") from None
    return matplotlib


@contextmanager
def _style(theme: Theme):
    matplotlib = matplotlib_module()
    rc = {"text.parse_math": False, "svg.fonttype": "path", "svg.hashsalt": "log_analyser",
          "font.family": "DejaVu Sans", "font.size": 9, "axes.facecolor": theme.background,
          "figure.facecolor": theme.background, "axes.edgecolor": theme.grid, "axes.labelcolor": theme.text,
          "text.color": theme.text, "xtick.color": theme.text, "ytick.color": theme.text,
          "axes.grid": True, "axes.axisbelow": True, "grid.color": theme.grid, "axes.spines.top": False,
          "axes.spines.right": False}
    with matplotlib.rc_context(rc):
        yield


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _clip(label: str) -> str:
    """A chart label as safe text: control characters as visible escapes (XML 1.0 cannot hold
    ESC, even as a character reference, so one would break the SVG), '$' not read as mathtext,
    clipped to LABEL_CHARS with an ellipsis."""
    label = terminal_safe(label)
    label = label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"
    return label.replace("$", r"\$")


def timeline_chart(result: AnalysisResult, theme: Theme = LIGHT, size=(8.0, 2.8)):
    """Requests per time bucket, flagged clients stacked in the alert colour on the rest."""
    frame, width = timeline(result)
    tz = result.summary.tz
    with _style(theme):
        fig = _figure(*size)
        ax = fig.add_subplot()
        if frame.height:
            x = _bucket_times(ax, frame["bucket"], tz)
            bar_width = width / 86400 * 0.9   # matplotlib dates are in days
            ax.bar(x, frame["other"].to_list(), width=bar_width, color=theme.accent, label="other clients",
                   align="edge")
            ax.bar(x, frame["flagged"].to_list(), width=bar_width, bottom=frame["other"].to_list(),
                   color=theme.alert, label="flagged clients", align="edge")
            ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False)
            fig.autofmt_xdate()
        ax.set_title(f"Requests over time ({tz}, per {_bucket_label(width)})", loc="left")
        ax.set_ylabel("requests")
    return fig


def _bucket_times(ax, buckets, tz: str) -> list:
    """The buckets as x values, with the axis ticks labelled in ``tz``. Outside UTC the times stay
    aware, so the buckets of the hour repeated when clocks go back do not fall on one another."""
    if tz == "UTC":
        return buckets.dt.replace_time_zone(None).to_list()
    ax.xaxis_date(ZoneInfo(tz))
    return buckets.to_list()


def _bucket_label(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} day" + ("s" if seconds > 86400 else "")
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"


def _locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator


def bar_chart(items: Sequence[tuple[str, float]], title: str, colour: str, theme: Theme = LIGHT,
              size=(4.0, 2.8), xlabel: str = ""):
    """Horizontal bars, first item on top; an empty chart says 'none'."""
    MaxNLocator = _locator()
    with _style(theme):
        fig = _figure(*size)
        ax = fig.add_subplot()
        if items:
            labels = [_clip(str(label)) for label, _ in items][::-1]
            ax.barh(range(len(items)), [value for _, value in items][::-1], color=colour)
            ax.set_yticks(range(len(items)), labels)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
            ax.grid(axis="y", visible=False)
        else:
            ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        ax.set_title(title, loc="left")
        if xlabel:
            ax.set_xlabel(xlabel)
    return fig


def standard_charts(result: AnalysisResult, theme: Theme = LIGHT, timeline_size=(8.0, 2.8)) -> dict[str, object]:
    """The report's charts by name: timeline, top_ips, attack_types, status_codes, and countries
    (only when enrichment gave any client a country). Sizes are in inches."""
    top = [(f.ip, f.score) for f in result.findings if f.flagged][:12]
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


def to_png(fig, dpi: int = 150) -> bytes:
    buffer = io.BytesIO()
    # zlib level 1: the PDF stores the pixels compressed again anyway; level 6 (the default) took ~20% longer
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None}, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def to_svg(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return buffer.getvalue()

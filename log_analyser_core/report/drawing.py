"""A chart as a list of shapes in points (1/72 inch, y downwards), painted as PNG for the PDF
(Pillow) or as SVG for the HTML page.

Text is measured with the DejaVu fonts matplotlib ships, the fonts the PNG is painted with. The SVG
keeps text as text in DejaVu Sans, with Verdana and the browser's sans-serif after it; layouts leave
slack (TEXT_SLACK) for a fallback font drawing a little wider. SVG output carries no date or random
id, so it is deterministic.
"""
from __future__ import annotations

import functools
import html
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

from log_analyser_core.errors import MissingExtraError

SVG_FONTS = "'DejaVu Sans', Verdana, 'Bitstream Vera Sans', sans-serif"
TEXT_SLACK = 1.1     # room for text drawn in a wider fallback font than the one measured
MEASURE_SIZE = 100   # points at which a font is loaded for measuring; widths scale linearly


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    fill: str


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    colour: str
    width: float = 0.8


@dataclass(frozen=True)
class Text:
    """``text`` with its baseline at ``y``; ``anchor`` is where ``x`` is: start, middle or end.
    ``vertical`` text reads bottom to top, its baseline the line x = ``x``."""
    x: float
    y: float
    text: str
    size: float
    colour: str
    anchor: str = "start"
    bold: bool = False
    vertical: bool = False


Shape = Rect | Line | Text


@dataclass(frozen=True)
class Drawing:
    """A chart ready to paint: its size in points, background and shapes (painted in order)."""
    width: float
    height: float
    background: str
    shapes: tuple[Shape, ...]


def font_dir() -> Path:
    """matplotlib's bundled DejaVu fonts, found without importing matplotlib (a third of a second)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("the fonts of the PDF and HTML reports", "report", "matplotlib")
    return Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf"


@functools.lru_cache(maxsize=8)
def _font(size: float, bold: bool = False):
    """A Pillow FreeType font; cached, as every chart measures and paints with the same few."""
    try:
        from PIL import ImageFont
    except ImportError:
        raise MissingExtraError("the charts of the PDF and HTML reports", "report", "pillow") from None
    return ImageFont.truetype(str(font_dir() / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")), size)


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Advance width of ``text`` in points at ``size`` points, in DejaVu Sans."""
    return _font(MEASURE_SIZE, bold).getlength(text) * size / MEASURE_SIZE


def ascent(size: float) -> float:
    """Height above the baseline of DejaVu Sans capitals and digits, in points (0.73 em)."""
    return 0.73 * size


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def to_svg(drawing: Drawing) -> bytes:
    """The drawing as a standalone SVG document (UTF-8), sized in points; text stays text."""
    w, h = _number(drawing.width), _number(drawing.height)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}pt" height="{h}pt" viewBox="0 0 {w} {h}" '
             f'font-family="{SVG_FONTS}">', f'<rect width="{w}" height="{h}" fill="{drawing.background}"/>']
    for shape in drawing.shapes:
        parts.append(_svg_shape(shape))
    parts.append("</svg>\n")
    return "".join(parts).encode()


def _svg_shape(shape: Shape) -> str:
    n = _number
    if isinstance(shape, Rect):
        return (f'<rect x="{n(shape.x)}" y="{n(shape.y)}" width="{n(shape.width)}" height="{n(shape.height)}" '
                f'fill="{shape.fill}"/>')
    if isinstance(shape, Line):
        return (f'<line x1="{n(shape.x1)}" y1="{n(shape.y1)}" x2="{n(shape.x2)}" y2="{n(shape.y2)}" '
                f'stroke="{shape.colour}" stroke-width="{n(shape.width)}"/>')
    extra = ' font-weight="bold"' if shape.bold else ""
    extra += f' transform="rotate(-90 {n(shape.x)} {n(shape.y)})"' if shape.vertical else ""
    return (f'<text x="{n(shape.x)}" y="{n(shape.y)}" font-size="{n(shape.size)}" fill="{shape.colour}" '
            f'text-anchor="{shape.anchor}"{extra}>{html.escape(shape.text, quote=False)}</text>')


PIL_ANCHORS = {"start": "ls", "middle": "ms", "end": "rs"}


def to_png(drawing: Drawing, dpi: int = 150) -> bytes:
    """The drawing as an RGB PNG at ``dpi``."""
    buffer = io.BytesIO()
    # zlib level 1: the PDF stores the pixels compressed again anyway
    to_image(drawing, dpi).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def to_image(drawing: Drawing, dpi: int = 150):
    """The drawing as an RGB Pillow image at ``dpi`` (fpdf2 takes one without a PNG in between)."""
    from PIL import Image, ImageDraw

    scale = dpi / 72
    image = Image.new("RGB", (round(drawing.width * scale), round(drawing.height * scale)), drawing.background)
    draw = ImageDraw.Draw(image)
    for shape in drawing.shapes:
        if isinstance(shape, Rect):
            x0, y0 = round(shape.x * scale), round(shape.y * scale)
            x1, y1 = round((shape.x + shape.width) * scale), round((shape.y + shape.height) * scale)
            if x1 > x0 and y1 > y0:
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=shape.fill)
        elif isinstance(shape, Line):
            draw.line([(round(shape.x1 * scale), round(shape.y1 * scale)),
                       (round(shape.x2 * scale), round(shape.y2 * scale))],
                      fill=shape.colour, width=max(1, round(shape.width * scale)))
        elif shape.vertical:
            _vertical_text(image, shape, scale)
        else:
            draw.text((shape.x * scale, shape.y * scale), shape.text, fill=shape.colour,
                      font=_font(shape.size * scale, shape.bold), anchor=PIL_ANCHORS[shape.anchor])
    return image


def _vertical_text(image, shape: Text, scale: float) -> None:
    """Text turned a quarter left: painted level on a transparent strip, rotated, pasted."""
    from PIL import Image, ImageDraw

    font = _font(shape.size * scale, shape.bold)
    width = round(font.getlength(shape.text)) + 2
    ascender, descender = font.getmetrics()
    strip = Image.new("RGBA", (width, ascender + descender), (0, 0, 0, 0))
    ImageDraw.Draw(strip).text((0, ascender), shape.text, fill=shape.colour, font=font, anchor="ls")
    turned = strip.rotate(90, expand=True)
    offset = {"start": 0, "middle": width / 2, "end": width}[shape.anchor]
    # after the turn the baseline is the strip's right-hand column of ascender pixels
    left = round(shape.x * scale) - ascender
    top = round(shape.y * scale - turned.height + offset)
    image.paste(turned, (left, top), turned)

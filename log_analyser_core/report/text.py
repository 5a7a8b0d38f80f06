"""Text helpers every writer shares: attacker-written text made safe for a terminal, severity colours.

Every string in a log was written by the client; ``terminal_safe`` shows control and bidi
characters as visible escapes before any of it reaches a terminal, a text report or a PDF.
"""
from __future__ import annotations

import re

# C0/C1 controls, DEL, and bidirectional overrides that can make text read differently than it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# One style per severity, told apart without colour too: critical is reversed (bold white on red).
SEVERITY_COLOURS = {"critical": "\x1b[1;97;41m", "high": "\x1b[1;31m", "medium": "\x1b[33m",
                    "low": "\x1b[36m", "info": "\x1b[2m"}
RESET = "\x1b[0m"


def terminal_safe(text: str) -> str:
    """Control and bidi characters shown as visible escapes (``\\x1b``, ``\\u202e``)."""
    def escape(match: re.Match[str]) -> str:
        code = ord(match.group(0))
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return _UNSAFE.sub(escape, text)

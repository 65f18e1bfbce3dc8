"""axe-core in the browser tests: inject the vendored build into a page and audit it.

The pages forbid every script but the service's own (Content-Security-Policy), so axe can only be
injected in a browser context created with ``bypass_csp=True`` (fixture ``audit_page``). The audit
runs the WCAG 2.0/2.1 level A and AA rules and returns the violations in a plain form; an
:class:`Allowed` entry drops the ones a test knows of and cannot fix (each with its reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Page

AXE_JS = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
#: WCAG 2.1 level AA, which includes levels A and the 2.0 rules.
TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")


@dataclass(frozen=True)
class Violation:
    """One rule broken by one element."""

    rule: str
    impact: str | None
    help: str
    target: str
    html: str
    summary: str

    def __str__(self) -> str:
        return f"{self.rule} ({self.impact}) {self.target}: {self.help}\n    {self.html[:160]}\n    {self.summary}"


@dataclass(frozen=True)
class Allowed:
    """A violation known and accepted: ``rule`` on elements whose target or HTML matches ``where``."""

    rule: str
    where: str
    reason: str

    def covers(self, violation: Violation) -> bool:
        """Whether this entry accepts ``violation``."""
        return violation.rule == self.rule and bool(
            re.search(self.where, violation.target) or re.search(self.where, violation.html)
        )


@cache
def _axe_source() -> str:
    return AXE_JS.read_text(encoding="utf-8")


_RUN = """async (tags) => {
  const result = await axe.run(document, {
    runOnly: {type: "tag", values: tags},
    resultTypes: ["violations"],
  });
  return result.violations.flatMap((rule) => rule.nodes.map((node) => ({
    rule: rule.id,
    impact: node.impact ?? rule.impact ?? null,
    help: rule.help,
    target: node.target.flat(Infinity).join(" >> "),
    html: node.html,
    summary: node.failureSummary ?? "",
  })));
}"""


async def audit(page: Page, allowed: tuple[Allowed, ...] = ()) -> list[Violation]:
    """The WCAG 2.1 A/AA violations axe finds on the page as it is now, less the allowed ones.

    Args:
        page: A page of a context created with ``bypass_csp=True``.
        allowed: Violations to leave out.

    Returns:
        The violations, one per rule and element.
    """
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.add_script_tag(content=_axe_source())
    found = [Violation(**item) for item in await page.evaluate(_RUN, list(TAGS))]
    return [v for v in found if not any(entry.covers(v) for entry in allowed)]


def _channel(value: float) -> float:
    value /= 255
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


def contrast(first: str, second: str) -> float:
    """The WCAG contrast ratio of two opaque CSS ``rgb(r, g, b)`` colours (as computed styles give them)."""
    lum = []
    for colour in (first, second):
        red, green, blue = (float(n) for n in re.findall(r"[\d.]+", colour)[:3])
        lum.append(0.2126 * _channel(red) + 0.7152 * _channel(green) + 0.0722 * _channel(blue))
    high, low = max(lum), min(lum)
    return (high + 0.05) / (low + 0.05)

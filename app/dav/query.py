"""``addressbook-query`` filters (RFC 6352, section 10.5) matched against a stored card.

A card is read with :mod:`vobject`; each ``prop-filter`` looks at every instance of its
property (a card has several ``EMAIL`` or ``TEL``): it matches when one instance passes its
``text-match`` tests (all of them with ``test="allof"``, one with ``anyof``). ``N`` is matched
as its components joined by ``;``, as the property is written. Collations: ``i;unicode-casemap``
(the default; case-folded), ``i;ascii-casemap`` (ASCII letters only) and ``i;octet`` (exact).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import vobject

if TYPE_CHECKING:
    from app.dav.xml import PropFilter, Query, TextMatch

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(value: str, collation: str) -> str:
    if collation == "i;octet":
        return value
    if collation == "i;ascii-casemap":
        return value.translate(_ASCII_LOWER)
    return value.casefold()


def _component(part: Any) -> str:
    return ",".join(part) if isinstance(part, list) else str(part or "")


def _value(line: Any) -> str:
    """The text of one property instance (structured values joined as they are written)."""
    value = line.value
    if line.name == "N" and hasattr(value, "family"):
        parts = (value.family, value.given, value.additional, value.prefix, value.suffix)
        return ";".join(_component(part) for part in parts)
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, bytes):
        return ""
    return str(value)


def text_matches(value: str, match: TextMatch) -> bool:
    """Whether a property value passes one ``text-match`` (``negate-condition`` applied)."""
    haystack = _fold(value, match.collation)
    needle = _fold(match.text, match.collation)
    if match.match_type == "equals":
        found = haystack == needle
    elif match.match_type == "starts-with":
        found = haystack.startswith(needle)
    elif match.match_type == "ends-with":
        found = haystack.endswith(needle)
    else:
        found = needle in haystack
    return found != match.negate


def _instance_matches(value: str, prop_filter: PropFilter) -> bool:
    results = (text_matches(value, match) for match in prop_filter.text_matches)
    return all(results) if prop_filter.test == "allof" else any(results)


def prop_filter_matches(card: Any, prop_filter: PropFilter) -> bool:
    """Whether a parsed card passes one ``prop-filter``."""
    instances = card.contents.get(prop_filter.name.lower(), [])
    if prop_filter.is_not_defined:
        return not instances
    if not prop_filter.text_matches:
        return bool(instances)
    return any(_instance_matches(_value(line), prop_filter) for line in instances)


def card_matches(card_text: str, query: Query) -> bool:
    """Whether a stored card is one of the query's results.

    Args:
        card_text: The stored vCard.
        query: The parsed report.

    Returns:
        ``True`` when the filters (combined by the filter's ``test``) pass; no filter passes all.
    """
    if not query.filters:
        return True
    try:
        card = vobject.readOne(card_text)
    except Exception:
        return False
    results = (prop_filter_matches(card, prop_filter) for prop_filter in query.filters)
    return all(results) if query.test == "allof" else any(results)

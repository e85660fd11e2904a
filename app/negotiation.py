"""HTTP content negotiation: pick the media type a client's `Accept` header prefers."""

from __future__ import annotations

from collections.abc import Sequence

from app.errors import Problem


def _parse_accept(accept: str) -> list[tuple[str, float, int]]:
    """(media range, quality, position) for each entry, e.g. 'text/*;q=0.5' -> ('text/*', 0.5)."""
    ranges = []
    for position, entry in enumerate(accept.split(",")):
        media_range, *parameters = (part.strip() for part in entry.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0  # a malformed weight: treat the range as not wanted
        if media_range:
            ranges.append((media_range.lower(), quality, position))
    return ranges


def _specificity(media_range: str, offer: str) -> int | None:
    """3 for an exact match, 2 for 'type/*', 1 for '*/*', None when the range excludes it."""
    if media_range == offer:
        return 3
    kind, _, subtype = media_range.partition("/")
    if subtype == "*" and offer.startswith(f"{kind}/"):
        return 2
    if media_range in ("*/*", "*"):
        return 1
    return None


def choose_media_type(accept: str | None, offers: Sequence[str]) -> str:
    """The offer the client weights highest (the most specific matching range decides its
    weight; ties go to the server's order); the first offer when `Accept` is absent or empty.
    Raises a 406 problem naming the offers when none is acceptable."""
    if accept is None or not accept.strip():
        return offers[0]
    ranges = _parse_accept(accept)
    best: tuple[float, int, str] | None = None
    for rank, offer in enumerate(offers):
        matches = [
            (specificity, quality)
            for media_range, quality, _ in ranges
            if (specificity := _specificity(media_range, offer)) is not None
        ]
        if not matches:
            continue
        quality = max(matches)[1]
        if quality > 0 and (best is None or (quality, -rank) > best[:2]):
            best = (quality, -rank, offer)
    if best is None:
        raise Problem(
            406,
            "Not Acceptable",
            f"this resource is available as {', '.join(offers)}; send one of them in Accept "
            f"(got '{accept}')",
            field="Accept",
        )
    return best[2]

"""The REST API's request parsers (``DEFAULT_PARSER_CLASSES``), apart from ``dss.api`` so
that DRF can import them while it sets up its views."""

from __future__ import annotations

from rest_framework.parsers import JSONParser

from .errors import InvalidInput


def refused_text(value, where: str = "") -> InvalidInput | None:
    """The error for the first text in a parsed JSON document that holds NUL or a lone
    surrogate, or for a number past a double's range; None when there is none."""
    place = where or "body"
    if isinstance(value, str):
        if "\x00" in value:
            return InvalidInput(f"{place}: NUL characters are not allowed", where=place)
        if any("\ud800" <= c <= "\udfff" for c in value):
            return InvalidInput(
                f"{place}: a lone surrogate (\\ud800-\\udfff) is not text", where=place
            )
        return None
    if isinstance(value, float):
        if value in (float("inf"), float("-inf")) or value != value:
            return InvalidInput(f"{place}: the number is out of range (past 1.8e308)", where=place)
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for key, item in items:
        path = f"{where}.{key}" if where else str(key)
        problem = refused_text(key, place) or refused_text(item, path)
        if problem:
            return problem
    return None


class StrictJSONParser(JSONParser):
    """JSON bodies whose text the portal can store and show: NUL characters and lone
    surrogates (``"\\u0000"``, ``"\\ud800"``) anywhere in the document are a 400 naming
    the field, as are numbers too large for a double (``1e309``, which Python would read
    as infinity). NaN and Infinity literals are refused by DRF's strict JSON already."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
            problem = refused_text(data)
        except RecursionError:
            raise InvalidInput(
                "body: the JSON document is nested too deeply", where="body"
            ) from None
        if problem:
            raise problem
        return data

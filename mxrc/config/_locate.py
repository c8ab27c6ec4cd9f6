"""Positions (line, column) of the keys and values of a JSON document.

``json.loads`` forgets where things were; error messages about a value
(``cpu_affinity.json:7:20: rt.cpu_cores[1]: ...``) need it. This scanner runs
only on text that ``json.loads`` has already accepted.
"""

from __future__ import annotations

import re
from json.decoder import scanstring  # type: ignore[attr-defined]

__all__ = ["JsonPath", "Locations", "locate"]

JsonPath = tuple[str | int, ...]

_WS = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null|NaN|-?Infinity")


class Locations:
    """Offsets of the values and keys of a parsed JSON text, and its duplicate keys."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values: dict[JsonPath, int] = {}
        self.keys: dict[JsonPath, int] = {}
        self.duplicates: list[JsonPath] = []
        self._duplicate_offsets: dict[JsonPath, int] = {}

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column of a character offset (as json.JSONDecodeError counts)."""
        line = self.text.count("\n", 0, offset) + 1
        column = offset - self.text.rfind("\n", 0, offset)
        return line, column

    def of_value(self, path: JsonPath) -> tuple[int, int] | None:
        """Line and column where the value at ``path`` starts, if it is in the text."""
        offset = self.values.get(path)
        return None if offset is None else self.line_col(offset)

    def of_key(self, path: JsonPath) -> tuple[int, int] | None:
        """Line and column of the key naming ``path`` (its value's for list items)."""
        offset = self.keys.get(path, self.values.get(path))
        if path in self._duplicate_offsets:
            offset = self._duplicate_offsets[path]
        return None if offset is None else self.line_col(offset)

    def nearest(self, path: JsonPath) -> tuple[int, int] | None:
        """Position of ``path``, or of its closest ancestor present in the text."""
        for end in range(len(path), -1, -1):
            pos = self.of_value(path[:end])
            if pos is not None:
                return pos
        return None

    def text_at(self, path: JsonPath) -> str:
        """The source text of the scalar value at ``path`` (up to 20 characters)."""
        offset = self.values.get(path)
        if offset is None:
            return ""
        match = _SCALAR.match(self.text, offset)
        return match.group(0) if match else self.text[offset : offset + 20]

    # -- scanner
    def _ws(self, i: int) -> int:
        match = _WS.match(self.text, i)
        assert match is not None
        return match.end()

    def _value(self, i: int, path: JsonPath) -> int:
        text = self.text
        i = self._ws(i)
        self.values[path] = i
        char = text[i]
        if char == "{":
            i = self._ws(i + 1)
            if text[i] == "}":
                return i + 1
            seen: set[str] = set()
            while True:
                i = self._ws(i)
                key_offset = i
                key, i = scanstring(text, i + 1)
                key_path = (*path, key)
                if key in seen:
                    self.duplicates.append(key_path)
                    self._duplicate_offsets.setdefault(key_path, key_offset)
                else:
                    self.keys[key_path] = key_offset
                seen.add(key)
                i = self._ws(i)
                i = self._value(i + 1, key_path)  # skip ':'
                i = self._ws(i)
                if text[i] == ",":
                    i += 1
                    continue
                return i + 1  # '}'
        if char == "[":
            i = self._ws(i + 1)
            if text[i] == "]":
                return i + 1
            index = 0
            while True:
                i = self._value(i, (*path, index))
                i = self._ws(i)
                index += 1
                if text[i] == ",":
                    i += 1
                    continue
                return i + 1  # ']'
        if char == '"':
            _, end = scanstring(text, i + 1)
            return int(end)
        match = _SCALAR.match(text, i)
        if match is None:  # pragma: no cover - json.loads accepted the text
            raise ValueError(f"unexpected character {char!r} at offset {i}")
        return match.end()


def locate(text: str) -> Locations:
    """Scan ``text`` (valid JSON) and return where each key and value is."""
    locations = Locations(text)
    locations._value(0, ())
    return locations

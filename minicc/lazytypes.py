"""A table of numpy types whose ml_dtypes entries (bf16, float8, int4, ...: the storage-only
element types) are added when first needed. Importing ml_dtypes takes about 0.7 s, which was
most of a warm `minicc compile` (a cache hit of 0.15 s); the IR's dtypes and the runtime's input
checks both use this. A leaf module: it imports nothing of minicc."""

from __future__ import annotations

from typing import Any, Callable


class LazyTypes(dict):
    """`plain` at once, `more(ml_dtypes)` on the first lookup that needs it."""

    def __init__(self, plain: dict, more: Callable[[Any], dict]):
        super().__init__(plain)
        self._more: Callable[[Any], dict] | None = more

    def _fill(self) -> None:
        more = self._more
        if more is not None:       # (two threads filling at once add the same entries)
            import ml_dtypes

            self.update(more(ml_dtypes))
            self._more = None

    def plain(self) -> list:
        """The entries there are without ml_dtypes."""
        return list(dict.items(self))

    def __missing__(self, key: Any) -> Any:
        if self._more is None:
            raise KeyError(key)
        self._fill()
        return self[key]

    def __contains__(self, key: object) -> bool:
        if not dict.__contains__(self, key):
            self._fill()
        return dict.__contains__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def items(self):  # type: ignore[override]
        self._fill()
        return dict.items(self)

    def keys(self):  # type: ignore[override]
        self._fill()
        return dict.keys(self)

    def values(self):  # type: ignore[override]
        self._fill()
        return dict.values(self)

    def __iter__(self):  # type: ignore[override]
        self._fill()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._fill()
        return dict.__len__(self)

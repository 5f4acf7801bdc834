"""How commands report progress: a `Say` prints one line (print by default; tests pass a list's append)."""

from __future__ import annotations

from collections.abc import Callable

Say = Callable[[str], None]

"""Local folder storage, the embedded default."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path


class LocalStorage:
    kind = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def _probe(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # A real write proves the folder is usable (a read-only mount would pass an exists check).
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".health-", delete=True) as fh:
            fh.write(b"ok")

    async def check(self) -> None:
        await asyncio.to_thread(self._probe)

    async def close(self) -> None:
        return None

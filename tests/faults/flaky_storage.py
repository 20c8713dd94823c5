"""A local image storage whose writes fail half-way while a switch file exists (``FAULT_STORAGE_SWITCH``).

While switched on, every second write (the preview, after the original went through) writes half its
bytes and then raises ``OSError(ENOSPC)``, exactly like ``FileSystemStorage`` on a full disk: Django
leaves the partial file behind, so the caller must clean it up.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

from django.core.files.storage import FileSystemStorage

_lock = threading.Lock()
_writes = 0


class FlakyStorage(FileSystemStorage):
    def _save(self, name: str, content: Any) -> str:
        global _writes  # noqa: PLW0603 - one counter per process
        switch = os.environ.get("FAULT_STORAGE_SWITCH", "")
        if switch and Path(switch).exists():
            with _lock:
                _writes += 1
                fail = _writes % 2 == 0
            if fail:
                path = Path(self.path(name))
                path.parent.mkdir(parents=True, exist_ok=True)
                data = content.read()
                with path.open("xb") as handle:
                    handle.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device (injected)", str(path))
        return super()._save(name, content)

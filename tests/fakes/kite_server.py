"""A fake Kite Connect v3 HTTP server, driven in tests by the real `kiteconnect` client.

The code lives in the package `tests.fakes.kite` (one module per concern); this module is the
stable import path and the command line.

In-process:   async with running_fake_kite(FakeKiteConfig()) as fake: ...  (fake.url, fake.state)
Own process:  python -m tests.fakes.kite_server --host 127.0.0.1 --port P --api-key K \\
                  --api-secret S --access-token T [--today YYYY-MM-DD] [--state-file PATH]
              or FakeKiteProcess(...).start() from a synchronous test.
Test controls: JSON under /_test/ (no auth), and the same as methods of `FakeKite`.
"""

from __future__ import annotations

from tests.fakes.kite.config import FIXTURE_INSTRUMENTS, FakeKiteConfig
from tests.fakes.kite.fake import FakeKite
from tests.fakes.kite.process import FakeKiteProcess
from tests.fakes.kite.server import FakeKiteHandle, build_fake_kite, main, running_fake_kite
from tests.fakes.kite.validation import FREEZE_MESSAGE, PROTECTION_MESSAGE

__all__ = ["FIXTURE_INSTRUMENTS", "FREEZE_MESSAGE", "PROTECTION_MESSAGE", "FakeKite",
           "FakeKiteConfig", "FakeKiteHandle", "FakeKiteProcess", "build_fake_kite", "main",
           "running_fake_kite"]

if __name__ == "__main__":
    main()

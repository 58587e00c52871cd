"""``pixgrep daemon`` with a counting OCR engine, for the two-daemon test (tests/test_fleet.py).

Run as a script: it registers the ``counting`` OCR backend, then runs the CLI's ``daemon`` command.
OCR pool processes are spawned, and spawn re-runs this module's top level in each of them, so they know
the backend too. The engine stands behind the real OcrEngine Protocol (RapidOCR, tested elsewhere): it
takes ``FLEET_OCR_SECONDS`` a call, returns one line naming the image by a digest of its pixels, and
appends ``<daemon name> <digest>`` to ``FLEET_OCR_LOG`` (one ``O_APPEND`` write a run), so the test counts
OCR runs per image across daemons, including runs of a daemon killed with ``kill -9``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

from pixgrep.stages import OCR, OcrLine

OCR.register("counting", f"{__name__}:CountingOcr")


def digest(image: Any) -> str:
    return hashlib.blake2b(image.tobytes(), digest_size=8).hexdigest()


class CountingOcr:
    name = "counting"
    version = "counting-1"

    def __init__(self, **_: Any) -> None:
        self.log = os.environ["FLEET_OCR_LOG"]
        self.who = os.environ.get("FLEET_NAME", "?")
        self.seconds = float(os.environ.get("FLEET_OCR_SECONDS", "0.05"))

    def recognize(self, image: Any) -> list[OcrLine]:
        d = digest(image)
        time.sleep(self.seconds)
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{self.who} {d}\n".encode())
        finally:
            os.close(fd)
        return [OcrLine(f"meme {d}", 0.99, (0.0, 0.0, 10.0, 10.0))]


if __name__ == "__main__":
    from pixgrep_cli.main import main

    sys.exit(main(["daemon"], prog_name="pixgrep"))

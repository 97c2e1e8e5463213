"""Puts `tests/` on the import path, so benchmarks can use the test support package (`support`).

The stand-ins, the tiny model and the generated rows are test code and stay out of the wheel; a
benchmark imports this module before `support.*`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

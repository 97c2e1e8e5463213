"""What a trained checkpoint says about its training: `memento_training.json`, written by `sft`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRAINING_RECORD = "memento_training.json"


def read_training_record(model_dir: str | Path) -> dict[str, Any] | None:
    """The `memento_training.json` of a checkpoint folder, or None (a model not trained here)."""
    path = Path(model_dir) / TRAINING_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def trained_mask_delimiters(model: str) -> bool:
    """Whether stage 2 hid the delimiters of closed blocks (`--mask-delimiters`); False for other models."""
    record = read_training_record(model) if Path(model).is_dir() else None
    return bool(record and record.get("mask_delimiters"))

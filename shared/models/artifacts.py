"""Names of a model version's files and the error for an unusable one — kept apart from
shared.models so that reading the registry (the bot checks which version is promoted) does not
import LightGBM (~150 MB)."""

from __future__ import annotations

from pathlib import Path

LGBM_FILE, RIDGE_FILE, GARCH_FILE, FEATURES_FILE = (
    "lgbm.txt", "ridge.json", "garch.json", "features.json")
ARTIFACTS = (LGBM_FILE, RIDGE_FILE, GARCH_FILE, FEATURES_FILE)


class ModelError(Exception):
    """A model artifact that cannot be used: missing, unreadable, truncated or inconsistent."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")

"""The configurations this process serves, each loaded once."""

from __future__ import annotations

import os
from pathlib import Path

from asgi_apim.config import Config, load_config

_configs: dict[str, Config] = {}


def config_for(path: str | os.PathLike[str]) -> Config:
    """The configuration at ``path``, loaded once per process."""
    key = str(Path(path).resolve())
    config = _configs.get(key)
    if config is None:
        config = _configs[key] = load_config(key)
    return config


def forget_configs() -> None:
    """Load every configuration again when next asked (tests, a reload)."""
    _configs.clear()

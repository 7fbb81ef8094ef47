"""Reading the environment (and a `.env` file) for every process that imports Django."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent


def load_dotenv() -> None:
    """Read `.env` at the project root without overriding the real environment."""
    from dotenv import load_dotenv as _load

    _load(BASE_DIR / ".env", override=False)


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def redis_url_for_celery(url: str) -> str:
    """Celery (kombu) spells Unix-socket Redis URLs `redis+socket://`."""
    if url.startswith("unix://"):
        parsed = urlparse(url)
        db = parse_qs(parsed.query).get("db", ["0"])[0]
        return f"redis+socket://{parsed.path}?virtual_host={db}"
    return url

"""docker/compose.yml and docker/Dockerfile read as the processes' specification: the
services' commands, environment, replicas and healthchecks, with Compose's variable
interpolation, so that tests start the processes exactly as the containers would."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

# $$, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(ValueError):
    pass


def interpolate(value: Any, variables: Mapping[str, str]) -> Any:
    """Compose's interpolation of every string in `value` (lists and mappings walked)."""
    if isinstance(value, str):
        def one(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, operator, argument = match.groups()
            current = variables.get(name)
            if operator in (":-", ":?") and not current:
                current = None
            if current is not None:
                return current
            if operator and operator.endswith("?"):
                raise MissingVariable(argument or f"{name} is required")
            return argument if operator else ""
        return _VARIABLE.sub(one, value)
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    return value


def referenced_variables() -> set[str]:
    """Every variable the compose file interpolates."""
    return {m.group(1) for m in _VARIABLE.finditer(COMPOSE_FILE.read_text()) if m.group(1)}


def load(variables: Mapping[str, str]) -> dict[str, Any]:
    """The compose file with YAML anchors merged and `variables` interpolated."""
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), variables)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command(service: Mapping[str, Any]) -> list[str]:
    """The service's command, or the image's CMD when it has none."""
    if "command" in service:
        given = service["command"]
        return ["sh", "-c", given] if isinstance(given, str) else [str(a) for a in given]
    return image_cmd()


def image_cmd() -> list[str]:
    """The Dockerfile's CMD (exec form)."""
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("CMD "):
            return json.loads(line[4:])
    raise AssertionError("docker/Dockerfile has no CMD")


def replicas(service: Mapping[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def healthcheck(service: Mapping[str, Any]) -> list[str]:
    """The healthcheck's test as an argv (CMD form) or a shell command (CMD-SHELL)."""
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return ["sh", "-c", test]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    assert test[0] == "CMD", test
    return list(test[1:])

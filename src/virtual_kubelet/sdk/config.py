"""Reading a provider's `--provider-config` file (JSON or YAML) into a pydantic model, with one
clear `ProviderConfigError` for each way it can be wrong. Used by the built-in providers and
available to third-party ones through `virtual_kubelet.sdk`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["ProviderConfigError", "read_mapping", "validate"]

Model = TypeVar("Model", bound=BaseModel)


class ProviderConfigError(ValueError):
    """The provider configuration file is missing or invalid."""


def read_mapping(path: Path) -> dict[str, Any]:
    """The file's top-level mapping (an empty file is an empty mapping). JSON is YAML."""
    try:
        raw = path.read_text()
    except OSError as exc:
        raise ProviderConfigError(f"cannot read provider config {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(raw) if raw.strip() else {}
    except yaml.YAMLError as exc:
        raise ProviderConfigError(
            f"provider config {path} is neither JSON nor YAML: {exc}"
        ) from None
    if not isinstance(doc, dict):
        raise ProviderConfigError(f"provider config {path} must be a mapping")
    return doc


def validate(model: type[Model], doc: dict[str, Any], path: Path) -> Model:
    """`doc` as `model`, or one error naming every bad key and why."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ProviderConfigError(f"provider config {path} is invalid: {problems}") from None

"""Finding providers by name: the built-in ones and any installed package's entry points.

A third-party package registers `[project.entry-points."virtual_kubelet.providers"] myname =
"mypkg.module:MyProvider"`; after `pip install`, `virtual-kubelet --provider myname` works. The
target is a `Provider` subclass or any callable taking a `ProviderContext` and returning a Provider.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ..sdk import Provider, ProviderContext
from . import catalog

ENTRY_POINT_GROUP = "virtual_kubelet.providers"

BUILTIN: dict[str, str] = {
    "aws": "virtual_kubelet.providers.aws:AwsProvider",
    "azurebatch": "virtual_kubelet.providers.azurebatch:AzureBatchProvider",
    "azure": "virtual_kubelet.providers.azure:AzureProvider",
    "cri": "virtual_kubelet.providers.cri:CriProvider",
    "kubernetes": "virtual_kubelet.providers.kubernetes:KubernetesProvider",
    "mock": "virtual_kubelet.providers.mock:MockProvider",
    "process": "virtual_kubelet.providers.process:ProcessProvider",
    "slurm": "virtual_kubelet.providers.slurm:SlurmProvider",
    "web": "virtual_kubelet.providers.web:web_provider",
}


class UnknownProvider(LookupError):
    """No provider of that name is built in or installed."""


class ProviderLoadError(RuntimeError):
    """The provider exists but its code could not be imported or constructed."""


def available() -> dict[str, str]:
    """name -> "module:attribute" for every provider that can be used, built-ins first."""
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def _import(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attribute.split(".") if attribute else ():
        obj = getattr(obj, part)
    return obj


def load(name: str) -> Callable[[ProviderContext], Provider]:
    """The class or factory registered as `name`."""
    targets = available()
    if name not in targets:
        row = catalog.retired(name)
        if row is not None:
            raise UnknownProvider(
                f"provider {name!r} ({row.title}) is retired and not built: {row.note}"
                " (see docs/providers.md)"
            )
        names = ", ".join(sorted(targets)) or "none"
        raise UnknownProvider(f"provider {name!r} not found (available: {names})")
    try:
        factory: Callable[[ProviderContext], Provider] = _import(targets[name])
    except Exception as exc:
        raise ProviderLoadError(
            f"provider {name!r} ({targets[name]}) cannot be imported: {exc}"
        ) from exc
    if not callable(factory):
        raise ProviderLoadError(f"provider {name!r} ({targets[name]}) is not a class or factory")
    return factory


def create(name: str, context: ProviderContext) -> Provider:
    """Instantiate provider `name` for `context`. Configuration errors propagate as raised."""
    provider = load(name)(context)
    if not isinstance(provider, Provider):
        raise ProviderLoadError(f"provider {name!r} did not return a virtual_kubelet Provider")
    return provider


def describe(name: str) -> str:
    """The provider's one-line description (imports it)."""
    try:
        factory = load(name)
    except (UnknownProvider, ProviderLoadError) as exc:
        return f"(unavailable: {exc})"
    return str(getattr(factory, "description", "") or "")

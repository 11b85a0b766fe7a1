"""LIST + WATCH of one kind of object into an in-memory store, with change callbacks.

The asyncio counterpart of client-go's reflector: list (paginated) to get a consistent snapshot and
its resourceVersion, then watch from there with bookmarks; when the server says the version is too
old (410 Gone) list again and report the difference as adds, updates and deletes. Callbacks must be
quick and must not raise (they enqueue work); the reflector survives anything they do.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

from .client import KubeClient, Params
from .errors import ApiError
from .objects import Obj, key_of

log = logging.getLogger(__name__)


def strip_managed_fields(obj: Obj) -> Obj:
    """Drop `metadata.managedFields` (server-side apply bookkeeping, often the largest part of an
    object, never read here): a third less memory per cached pod."""
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


class Handler(Protocol):
    def on_add(self, obj: Obj) -> None: ...
    def on_update(self, old: Obj, new: Obj) -> None: ...
    def on_delete(self, obj: Obj) -> None: ...


class CallbackHandler:
    """A Handler made of plain functions; any of them may be omitted."""

    def __init__(
        self,
        on_add: Callable[[Obj], None] | None = None,
        on_update: Callable[[Obj, Obj], None] | None = None,
        on_delete: Callable[[Obj], None] | None = None,
    ) -> None:
        self._add, self._update, self._delete = on_add, on_update, on_delete

    def on_add(self, obj: Obj) -> None:
        if self._add:
            self._add(obj)

    def on_update(self, old: Obj, new: Obj) -> None:
        if self._update:
            self._update(old, new)

    def on_delete(self, obj: Obj) -> None:
        if self._delete:
            self._delete(obj)


class _Relist(Exception):
    pass


class Reflector:
    """Keeps `store` equal to the objects at `url` matching the selectors."""

    def __init__(
        self,
        client: KubeClient,
        url: str,
        *,
        name: str,
        handler: Handler | None = None,
        field_selector: str | None = None,
        label_selector: str | None = None,
        page_size: int = 500,
        transform: Callable[[Obj], Obj] | None = None,
        store: Callable[[], MutableMapping[str, Obj]] = dict,
    ) -> None:
        self.client = client
        self.url = url
        self.name = name
        self.handler = handler or CallbackHandler()
        self.page_size = page_size
        self.transform = transform or strip_managed_fields
        self.selectors: dict[str, str] = {}
        if field_selector:
            self.selectors["fieldSelector"] = field_selector
        if label_selector:
            self.selectors["labelSelector"] = label_selector
        #: Makes an empty store: a dict, or e.g. a `packed.PackedStore` for many objects held long.
        self._new_store = store
        self.store: MutableMapping[str, Obj] = store()
        self.resource_version = ""
        self.synced = asyncio.Event()

    def get(self, key: str) -> Obj | None:
        return self.store.get(key)

    async def run(self) -> None:
        """List and watch until cancelled, recovering from every error with backoff."""
        failures = 0
        while True:
            try:
                await self._list()
                failures = 0
                await self._watch_until_relist()
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6)) * random.uniform(0.8, 1.2)
                log.warning("%s: list failed (%s); retrying in %.1f s", self.name, exc, delay)
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        # Each page goes into the new store as it arrives: a store that packs its objects never
        # holds the whole list decoded at once.
        fresh = self._new_store()
        params: dict[str, str | int | bool] = dict(self.selectors, limit=self.page_size)
        resource_version = ""
        while True:
            try:
                page = await self.client.get(self.url, params)
            except ApiError as exc:
                if exc.gone and "continue" in params:
                    # The continue token expired mid-list: start over, unpaginated.
                    params = dict(self.selectors)
                    fresh = self._new_store()
                    continue
                raise
            for item in page.get("items") or []:
                obj = self.transform(item)
                fresh[key_of(obj)] = obj
            resource_version = resource_version or page["metadata"].get("resourceVersion", "")
            token = page["metadata"].get("continue")
            if not token:
                break
            params["continue"] = token
        self._replace(fresh)
        self.resource_version = resource_version
        self.synced.set()

    def _replace(self, fresh: MutableMapping[str, Obj]) -> None:
        old_store, self.store = self.store, fresh
        for key in fresh:
            obj = fresh[key]
            old = old_store.get(key)
            if old is None:
                self._call(self.handler.on_add, obj)
            elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._call(self.handler.on_update, old, obj)
        for key in old_store:
            if key not in fresh:
                self._call(self.handler.on_delete, old_store[key])

    async def _watch_until_relist(self) -> None:
        failures = 0
        while True:
            params: Params = dict(
                self.selectors,
                resourceVersion=self.resource_version,
                allowWatchBookmarks=True,
                timeoutSeconds=random.randint(240, 360),
            )
            try:
                async for event in self.client.watch(self.url, params):
                    self._apply(event)
                    failures = 0
                # The server closed the watch at its timeout: resume from where we are.
            except _Relist:
                return
            except ApiError as exc:
                if exc.gone:
                    log.info(
                        "%s: resourceVersion %s expired; relisting",
                        self.name,
                        self.resource_version,
                    )
                    return
                failures += 1
                delay = min(30.0, 0.25 * 2 ** min(failures, 7)) * random.uniform(0.8, 1.2)
                log.warning("%s: watch failed (%s); rewatching in %.1f s", self.name, exc, delay)
                await asyncio.sleep(delay)

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410 or obj.get("reason") in ("Expired", "Gone"):
                log.info("%s: watch expired (%s); relisting", self.name, obj.get("message"))
                raise _Relist()
            raise ApiError(
                int(obj.get("code") or 500), obj.get("reason", ""), obj.get("message", ""), obj
            )
        rv = obj.get("metadata", {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        obj = self.transform(obj)
        key = key_of(obj)
        if kind in ("ADDED", "MODIFIED"):
            old = self.store.get(key)
            self.store[key] = obj
            if old is None:
                self._call(self.handler.on_add, obj)
            else:
                self._call(self.handler.on_update, old, obj)
        elif kind == "DELETED":
            if key in self.store:
                del self.store[key]
            self._call(self.handler.on_delete, obj)
        if rv:
            self.resource_version = rv

    def _call(self, fn: Callable[..., None], *args: Obj) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s: event handler failed", self.name)

"""The reflector's list/watch/relist logic, driven by a scripted fake client (pure logic)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from virtual_kubelet.kube.packed import PackedStore, Packer
from virtual_kubelet.kube.reflector import CallbackHandler, Reflector


def _obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


class ScriptedClient:
    """Answers LISTs and WATCHes from scripts; records the parameters it was called with."""

    def __init__(self, lists: list[dict[str, Any]], watches: list[list[dict[str, Any]]]) -> None:
        self.lists = lists
        self.watches = watches
        self.list_params: list[dict[str, Any]] = []
        self.watch_params: list[dict[str, Any]] = []
        self.exhausted = asyncio.Event()

    async def get(self, url: str, params: dict[str, Any]) -> dict[str, Any]:
        self.list_params.append(dict(params))
        return self.lists.pop(0)

    async def watch(self, url: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.watch_params.append(dict(params))
        if not self.watches:
            self.exhausted.set()
            await asyncio.sleep(3600)
        for event in self.watches.pop(0):
            yield event


@pytest.mark.parametrize("packed", [False, True], ids=["dict", "packed store"])
def test_list_watch_bookmark_and_relist_after_410(packed: bool) -> None:
    calls: list[tuple[str, str, str]] = []
    handler = CallbackHandler(
        on_add=lambda o: calls.append(
            ("add", o["metadata"]["name"], o["metadata"]["resourceVersion"])
        ),
        on_update=lambda old, new: calls.append(
            ("update", new["metadata"]["name"], new["metadata"]["resourceVersion"])
        ),
        on_delete=lambda o: calls.append(
            ("delete", o["metadata"]["name"], o["metadata"]["resourceVersion"])
        ),
    )
    client = ScriptedClient(
        lists=[
            {"metadata": {"resourceVersion": "10"}, "items": [_obj("a", "1"), _obj("b", "2")]},
            {
                "metadata": {"resourceVersion": "60"},
                "items": [_obj("a", "55"), _obj("c", "11"), _obj("d", "58")],
            },
        ],
        watches=[
            [
                {"type": "ADDED", "object": _obj("c", "11")},
                {"type": "MODIFIED", "object": _obj("a", "12")},
                {"type": "DELETED", "object": _obj("b", "13")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "50"}}},
            ],
            [
                {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "code": 410,
                        "reason": "Expired",
                        "message": "too old",
                    },
                }
            ],
        ],
    )

    async def main() -> Reflector:
        reflector = Reflector(
            client,
            "/api/v1/pods",
            name="pods",
            handler=handler,  # type: ignore[arg-type]
            field_selector="spec.nodeName=n1",
            store=(lambda: PackedStore(Packer())) if packed else dict,
        )
        task = asyncio.create_task(reflector.run())
        await asyncio.wait_for(client.exhausted.wait(), 5)
        task.cancel()
        return reflector

    reflector = asyncio.run(main())
    assert calls == [
        ("add", "a", "1"),
        ("add", "b", "2"),  # initial list
        ("add", "c", "11"),
        ("update", "a", "12"),
        ("delete", "b", "13"),  # watch
        ("update", "a", "55"),
        ("add", "d", "58"),  # relist after 410: only real differences
    ]
    assert sorted(reflector.store) == ["ns/a", "ns/c", "ns/d"]
    assert reflector.get("ns/a") == _obj("a", "55")
    assert reflector.get("ns/b") is None
    assert client.list_params[0]["fieldSelector"] == "spec.nodeName=n1"
    first, resumed, after_relist = client.watch_params
    assert first["resourceVersion"] == "10"
    assert first["allowWatchBookmarks"] is True
    assert resumed["resourceVersion"] == "50"  # the bookmark moved us on without any object
    assert after_relist["resourceVersion"] == "60"
    assert reflector.synced.is_set()


def test_a_failing_handler_does_not_stop_the_reflector() -> None:
    seen: list[str] = []

    def explode(obj: dict[str, Any]) -> None:
        seen.append(obj["metadata"]["name"])
        raise RuntimeError("handler bug")

    client = ScriptedClient(
        lists=[{"metadata": {"resourceVersion": "1"}, "items": [_obj("a", "1")]}],
        watches=[[{"type": "ADDED", "object": _obj("b", "2")}]],
    )

    async def main() -> Reflector:
        reflector = Reflector(client, "/x", name="x", handler=CallbackHandler(on_add=explode))  # type: ignore[arg-type]
        task = asyncio.create_task(reflector.run())
        await asyncio.wait_for(client.exhausted.wait(), 5)
        task.cancel()
        return reflector

    reflector = asyncio.run(main())
    assert seen == ["a", "b"]
    assert sorted(reflector.store) == ["ns/a", "ns/b"]


def test_managed_fields_are_not_kept() -> None:
    heavy = _obj("a", "1")
    heavy["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    client = ScriptedClient(
        lists=[{"metadata": {"resourceVersion": "1"}, "items": [heavy]}], watches=[]
    )

    async def main() -> Reflector:
        reflector = Reflector(client, "/x", name="x")  # type: ignore[arg-type]
        task = asyncio.create_task(reflector.run())
        await asyncio.wait_for(client.exhausted.wait(), 5)
        task.cancel()
        return reflector

    stored = asyncio.run(main()).store["ns/a"]
    assert "managedFields" not in stored["metadata"]
    assert stored["metadata"]["name"] == "a"

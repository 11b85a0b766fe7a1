import io
import zipfile

import pytest

from virtual_kubelet.devcluster.gotoolchain import module_zip_hash
from virtual_kubelet.devcluster.waiting import WaitTimeout, wait_until


def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", "ready"])
    assert wait_until(lambda: next(values), timeout=10, what="x", interval=0) == "ready"


def test_wait_until_timeout_quotes_what_and_last_seen() -> None:
    def probe() -> None:
        raise ConnectionRefusedError("nope")

    with pytest.raises(
        WaitTimeout, match=r"waiting for the API server; last seen: ConnectionRefusedError"
    ):
        wait_until(probe, timeout=0.05, what="the API server", interval=0.01)


def _zip(entries: list[tuple[str, bytes]]) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in entries:
            z.writestr(name, data)
    return zipfile.ZipFile(buffer)


def test_module_zip_hash_is_go_dirhash_h1() -> None:
    # golang.org/x/mod/sumdb/dirhash Hash1: sha256 over "<sha256 hex>  <name>\n" lines sorted by name.
    a = _zip([("m@v1/b.txt", b"b"), ("m@v1/a.txt", b"a")])
    b = _zip([("m@v1/a.txt", b"a"), ("m@v1/b.txt", b"b")])
    assert module_zip_hash(a) == module_zip_hash(b)
    assert module_zip_hash(a).startswith("h1:")
    assert module_zip_hash(a) != module_zip_hash(_zip([("m@v1/a.txt", b"A"), ("m@v1/b.txt", b"b")]))

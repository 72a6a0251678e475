"""Which data servers a master announces (``mlitb.master._dataservers``): the spread over
workers, the refusal of stores that are not shared, forgetting one that went away."""

from __future__ import annotations

import pytest

from mlitb.master import RequestError
from mlitb.master._dataservers import DataServerTable
from mlitb.protocol import MAX_DATA_SERVERS


def test_workers_spread_over_the_data_servers_and_keep_their_order() -> None:
    table = DataServerTable()
    assert table.urls_for(7) == ()
    for key, url in enumerate(["http://a:1", "http://b:1", "http://c:1"]):
        table.register(key, url, "shared")
    for w in range(0, 60, 2):  # workers join in turn (ids in between: operators)
        table.join(w)
    firsts = [table.urls_for(w)[0] for w in range(0, 60, 2)]
    assert {u: firsts.count(u) for u in set(firsts)} == {
        "http://a:1": 10, "http://b:1": 10, "http://c:1": 10}
    for w in range(0, 12, 2):  # each gets all of them, its own first, the same each time
        assert sorted(table.urls_for(w)) == ["http://a:1", "http://b:1", "http://c:1"]
        assert table.urls_for(w) == table.urls_for(w + 6)
    assert table.forget(1) and not table.forget(1)
    assert sorted(table.urls_for(0)) == ["http://a:1", "http://c:1"]


def test_several_data_servers_only_on_one_shared_store() -> None:
    table = DataServerTable()
    table.set_fixed("http://embedded:8001", None)  # a directory store of its own
    with pytest.raises(RequestError, match="must share one store"):
        table.register(1, "http://other:8001", "redis-x")
    shared = DataServerTable()
    shared.set_fixed("http://embedded:8001", "redis-x")
    shared.register(1, "http://other:8001", "redis-x")
    with pytest.raises(RequestError, match="store redis-y"):
        shared.register(2, "http://third:8001", "redis-y")
    with pytest.raises(RequestError, match="a store of its own"):
        shared.register(2, "http://third:8001", None)
    with pytest.raises(RequestError, match="registered already"):
        shared.register(2, "http://other:8001", "redis-x")
    assert shared.urls_for(0) == ("http://embedded:8001", "http://other:8001")
    alone = DataServerTable()
    alone.register(1, "http://only:8001", None)  # one data server may keep a store of its own
    assert alone.urls_for(5) == ("http://only:8001",)


def test_the_table_is_bounded() -> None:
    table = DataServerTable()
    for key in range(MAX_DATA_SERVERS):
        table.register(key, f"http://d{key}:8001", "s")
    with pytest.raises(RequestError, match=f"{MAX_DATA_SERVERS} data servers already"):
        table.register(999, "http://one-more:8001", "s")

"""mlitb/browser/lib/protocol.js keeps copies of the protocol's numbers (docs/protocol.md): each
must equal the Python one in ``mlitb.protocol`` (and the final close codes every Python client
follows, ``mlitb.protocol.FINAL_CLOSE_CODES``). The JS is read with regular expressions; a
constant that moved or changed its shape fails here too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlitb.protocol import MAX_STEPS, PROTOCOL_VERSION, CloseCode, FrameKind, ResultKind
from mlitb.protocol._frames import _HEADERS

SOURCE = Path(__file__).parents[1] / "mlitb" / "browser" / "lib" / "protocol.js"
JS_ONLY_CLOSE_CODES = {"ABNORMAL": 1006}
"""1006 is the browser's own (the connection dropped without a close frame), never sent."""


def _number(text: str) -> int:
    return int(text, 0)


def js_object(name: str, source: str | None = None) -> dict[str, int]:
    """``const NAME = { KEY: number, ... };`` (exported or not) -> {KEY: number}."""
    source = SOURCE.read_text() if source is None else source
    table = re.search(rf"^(?:export )?const {name} = \{{(.*?)\}};", source, re.S | re.M)
    assert table is not None, f"protocol.js defines no object {name}"
    pairs = re.findall(r"(\w+)\s*:\s*(0x[0-9a-fA-F]+|\d+)", table.group(1))
    assert pairs, f"protocol.js: {name} holds no numbers"
    return {key: _number(value) for key, value in pairs}


def js_number(name: str) -> int:
    found = re.search(rf"^export const {name} = (0x[0-9a-fA-F]+|\d+);", SOURCE.read_text(), re.M)
    assert found is not None, f"protocol.js exports no number {name}"
    return _number(found.group(1))


def test_the_browser_knows_every_close_code_the_master_sends() -> None:
    js = js_object("CLOSE")
    for code in CloseCode:
        assert code.name in js, f"protocol.js CLOSE lacks {code.name} ({int(code)})"
        assert js[code.name] == code, \
            f"protocol.js CLOSE.{code.name} is {js[code.name]}, mlitb.protocol says {int(code)}"
    extra = {k: v for k, v in js.items() if k not in CloseCode.__members__}
    assert extra == JS_ONLY_CLOSE_CODES, f"close codes only protocol.js knows: {extra}"


def test_the_browser_stops_after_the_close_codes_the_python_node_stops_after() -> None:
    from mlitb.protocol import FINAL_CLOSE_CODES

    found = re.search(r"export const FINAL_CLOSE_CODES = new Set\(\[(.*?)\]\);",
                      SOURCE.read_text(), re.S)
    assert found is not None, "protocol.js defines no FINAL_CLOSE_CODES set"
    js = set(re.findall(r"CLOSE\.(\w+)", found.group(1)))
    assert js == {CloseCode(code).name for code in FINAL_CLOSE_CODES}


def test_the_browser_speaks_the_same_version_and_frames() -> None:
    assert js_number("PROTOCOL_VERSION") == PROTOCOL_VERSION
    assert js_object("KIND") == {kind.name: int(kind) for kind in FrameKind}
    assert js_object("RESULT_KIND") == {kind.name: int(kind) for kind in ResultKind}
    assert js_object("HEADER") == {str(int(kind)): header.size for kind, header in _HEADERS.items()}
    assert js_number("MAX_STEPS") == MAX_STEPS


@pytest.mark.parametrize("source, problem", [
    ("export const CLOSE = {\n  NORMAL: 1000,\n};", "lacks GOING_AWAY"),
    ("export const CLOSE = {\n" + "".join(f"  {c.name}: {int(c) + (c.name == 'TIMED_OUT')},\n"
                                          for c in CloseCode) + "  ABNORMAL: 1006,\n};",
     "TIMED_OUT is 4007"),
])
def test_a_close_code_missing_or_different_in_the_js_fails(
        source: str, problem: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy = tmp_path / "protocol.js"
    copy.write_text(source)
    monkeypatch.setattr(f"{__name__}.SOURCE", copy)
    with pytest.raises(AssertionError, match=problem):
        test_the_browser_knows_every_close_code_the_master_sends()

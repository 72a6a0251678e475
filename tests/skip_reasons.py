"""A pytest plugin (loaded by conftest.py): a test that skips must say why.

``pytest.skip()`` with no message, or ``@pytest.mark.skip`` without ``reason=``, turns into a
failure that says so, so ``pytest -rs`` always lists a reason for every skip.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

EMPTY = {"", "Skipped", "unconditional skip"}  # pytest.skip(), bare @pytest.mark.skip


def skip_reason(report: pytest.TestReport) -> str | None:
    """The reason a skipped report gives, or None if it is not a skip."""
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return None
    return str(report.longrepr[2]).removeprefix("Skipped:").strip()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if hasattr(report, "wasxfail"):
        return
    reason = skip_reason(report)
    if reason is not None and reason in EMPTY:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} skipped without saying why: give pytest.skip() a "
                           f"message, or @pytest.mark.skip / skipif a reason=")

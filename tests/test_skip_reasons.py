"""Every skip in the suite says why (tests/skip_reasons.py), and the shared data is found
where mlitb/bench/ finds it: ../shared/data relative to the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]


def test_a_skip_without_a_reason_fails_and_one_with_a_reason_skips(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["skip_reasons"]')
    pytester.makepyfile(skip_reasons=(Path(__file__).parent / "skip_reasons.py").read_text())
    pytester.makepyfile(test_inner='''
import pytest

def test_silent():
    pytest.skip()

@pytest.mark.skip
def test_marked_silent():
    pass

def test_says_why():
    pytest.skip("needs a GPU")

@pytest.mark.skipif(True, reason="not on this platform")
def test_marked_says_why():
    pass
''')
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, errors=1, skipped=2)  # mark.skip fails in its setup
    result.stdout.fnmatch_lines(["*test_marked_silent skipped without saying why*",
                                 "*test_silent skipped without saying why*",
                                 "*SKIPPED*needs a GPU*", "*SKIPPED*not on this platform*"])


def test_shared_data_is_found_beside_the_checkout_like_the_benchmarks() -> None:
    from conftest import SHARED_DATA, shared_file  # type: ignore[import-not-found]

    import mlitb.bench.train as bench_train

    assert SHARED_DATA == ROOT.parent / "shared" / "data" == bench_train.DATA
    if not (SHARED_DATA / "cifar10-test.zip").is_file():
        pytest.skip(f"the shared data is not at {SHARED_DATA} on this machine")
    assert shared_file("cifar10-test.zip").stat().st_size > 1_000_000
    with pytest.raises(pytest.skip.Exception, match=r"nope.zip is not in the shared data "
                       r"directory .*\.\./shared/data relative to the checkout"):
        shared_file("nope.zip")

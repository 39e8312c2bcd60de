"""Cases for tests/test_gpu_check.py (not collected by default): one that hangs, one quick."""

import time


def test_hangs():
    time.sleep(60)


def test_quick():
    assert 1 + 1 == 2

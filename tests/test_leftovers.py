"""The test run itself: a process a test leaves running fails the run (conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from .conftest import REPO

LEAKING_TEST = '''
import subprocess, sys

def test_leaves_a_process_running():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
'''


def test_a_process_left_running_by_a_test_fails_the_run(tmp_path):
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_leak.py").write_text(LEAKING_TEST)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 passed" in run.stdout  # the test itself passed: the run failed on what it left
    assert "left running by the tests" in run.stderr and "time.sleep(120)" in run.stderr

"""A work-horse forked while another thread of the worker imports a module can still import it
(``workers/forksafe.py``): without the wait, the child inherits that module's import lock held by
a thread it does not have, and its own import of the module never returns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: The worker's situation, in a process of its own (fork hooks can't be taken back): a thread is
#: inside a slow import when the main thread forks; the child imports the same module.
SCRIPT = """
import os, signal, sys, threading, time
sys.path.insert(0, sys.argv[1])
from workers import forksafe
forksafe.install()
threading.Thread(target=__import__, args=("slow_module",)).start()
time.sleep(0.3)  # the other thread is inside the import now
pid = os.fork()
if pid == 0:
    signal.alarm(10)  # a child stuck on the import dies of SIGALRM instead of hanging the test
    import slow_module
    os._exit(0 if slow_module.READY else 1)
_, status = os.waitpid(pid, 0)
print("exit", os.waitstatus_to_exitcode(status))
"""


def test_a_fork_during_another_threads_import_leaves_the_child_able_to_import(tmp_path: Path) -> None:
    (tmp_path / "slow_module.py").write_text("import time\ntime.sleep(1.5)\nREADY = True\n")
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        check=False, cwd=Path(__file__).resolve().parents[3], capture_output=True, text=True, timeout=60,
    )
    assert run.stdout.strip() == "exit 0", run.stdout + run.stderr  # "exit -14": the child hung on the import

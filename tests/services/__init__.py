"""Real services for tests, started on 127.0.0.1 inside the test and stopped after it.

The helpers here only detect what the machine has: installing system packages is the job of one
script, ``tests/services/install.sh`` (run by ``.ci/run``; by hand as root), never of a test. A
missing service is a skip whose one-line reason names that script (``install_first``).
"""

INSTALL_SCRIPT = "tests/services/install.sh"


def install_first(missing: str) -> str:
    """The one-line skip reason for a service that is not installed: "slurmctld not found: run ..."."""
    return f"{missing} not found: run `bash {INSTALL_SCRIPT}` (as root) first"

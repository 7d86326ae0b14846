"""Crash points for fault-injection tests: die exactly between two steps of a multi-step change.

``LEVYDRIFT_CRASH_AT=after_rename levydrift train-worker`` makes the process exit at once
(``os._exit``: no cleanup, no flush, no ``finally``, like a kill -9 or a power cut) the moment
it passes the crash point named ``after_rename``. The tests use this to prove that every step of
registering, promoting and announcing a model version can be interrupted and recovered.
Unset (always, outside tests) a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os

CRASH_VARIABLE = "LEVYDRIFT_CRASH_AT"  # not a setting: settings.NON_SETTING_VARIABLES skips it
CRASH_EXIT_CODE = 70


def crash_point(name: str) -> None:
    """Exit the process immediately if ``LEVYDRIFT_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_VARIABLE) == name:
        os._exit(CRASH_EXIT_CODE)

"""`describe_schedule`: every schedule form in words, from the pure schedules package."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from crmflow.definitions import Schedule
from crmflow.schedules import describe_schedule

CASES: list[tuple[dict[str, Any], str]] = [
    ({"every": "day", "at": "08:00"}, "every day at 08:00 Europe/Paris"),
    ({"every": "week", "at": "08:00", "days": ["fri", "mon"]}, "every week on mon, fri at 08:00"),
    ({"every": "month", "at": "09:30", "days_of_month": [15, 1]}, "every month on days 1, 15"),
    (
        {"every": "month", "at": "09:30", "days_of_month": [31]},
        "every month on day 31 (no run in a month without the day) at 09:30",
    ),
    ({"every": "month", "at": "15:00", "on": "last_day"}, "every month on the last day at 15:00"),
    ({"every": "month", "at": "09:00", "on": "first_monday"}, "every month on the first monday"),
    ({"every": "year", "at": "08:00", "month": 7, "day": 4}, "every year on jul 4 at 08:00"),
    ({"every": "year", "at": "08:00", "month": 2, "day": 29}, "every year on feb 29 (leap years"),
]


@pytest.mark.parametrize(("fields", "expected"), CASES, ids=[text for _, text in CASES])
def test_describes_schedule(
    schedule_of: Callable[..., Schedule], fields: dict[str, Any], expected: str
) -> None:
    text = describe_schedule(schedule_of(**fields), timezone="Europe/Paris")
    assert text.startswith(expected)
    assert text.endswith(" Europe/Paris")


def test_schedules_package_imports_no_temporalio() -> None:
    """Descriptions and next runs are pure: only `schedule_spec` needs temporalio's types."""
    code = (
        "import sys; from crmflow.schedules import describe_schedule, next_run_times; "
        "print('temporalio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""Maintenance windows (sdv_events.windows): an operator's `Mon-Fri 22:00-05:00 Europe/Berlin`,
when it is open, and when the next one opens — across midnight, weekends and DST changes."""

from datetime import UTC, datetime, timedelta

import pytest

from sdv_events.windows import InvalidWindow, closes_at, is_open, next_opening, parse_window, parse_windows

NIGHTS = parse_window("Mon-Fri 22:00-05:00 Europe/Berlin")


def berlin(*args: int) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(*args, tzinfo=ZoneInfo("Europe/Berlin"))  # type: ignore[misc]


def test_a_night_window_is_open_past_midnight_and_closed_in_the_day() -> None:
    # 2026-12-01 is a Tuesday
    assert is_open([NIGHTS], berlin(2026, 12, 1, 23, 0))
    assert is_open([NIGHTS], berlin(2026, 12, 2, 4, 59))  # Tuesday's window, Wednesday morning
    assert not is_open([NIGHTS], berlin(2026, 12, 2, 5, 0))
    assert not is_open([NIGHTS], berlin(2026, 12, 1, 12, 0))
    assert closes_at([NIGHTS], berlin(2026, 12, 1, 23, 0)) == berlin(2026, 12, 2, 5, 0)


def test_the_weekend_has_no_opening_and_the_next_one_is_monday_night() -> None:
    saturday_noon = berlin(2026, 12, 5, 12, 0)
    assert not is_open([NIGHTS], saturday_noon)
    assert next_opening([NIGHTS], saturday_noon) == berlin(2026, 12, 7, 22, 0)
    # Friday's window runs into Saturday morning
    assert is_open([NIGHTS], berlin(2026, 12, 5, 3, 0))


def test_next_opening_is_now_when_open_and_none_without_windows() -> None:
    now = berlin(2026, 12, 1, 23, 0)
    assert next_opening([NIGHTS], now) == now
    assert next_opening([], now) is None
    assert is_open([], now)  # no windows: no restriction


def test_several_windows_combine_and_the_earliest_opening_wins() -> None:
    windows = parse_windows(["Sat,Sun 00:00-24:00 UTC", "daily 02:00-04:00 America/New_York"])
    tuesday = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert next_opening(windows, tuesday) == datetime(2026, 12, 2, 7, 0, tzinfo=UTC)  # 02:00 EST
    assert is_open(windows, datetime(2026, 12, 5, 23, 59, tzinfo=UTC))
    assert closes_at(windows, datetime(2026, 12, 6, 1, 0, tzinfo=UTC)) == datetime(2026, 12, 7, tzinfo=UTC)


def test_a_window_keeps_its_local_hours_across_a_dst_change() -> None:
    daily = parse_window("daily 01:00-03:00 Europe/Berlin")
    # 2027-03-28: clocks go from 02:00 CET to 03:00 CEST
    assert next_opening([daily], berlin(2027, 3, 27, 12, 0)) == berlin(2027, 3, 28, 1, 0)
    assert next_opening([daily], berlin(2027, 3, 28, 12, 0)) == berlin(2027, 3, 29, 1, 0)
    assert next_opening([daily], berlin(2027, 3, 28, 12, 0)) == datetime(
        2027, 3, 28, 23, 0, tzinfo=UTC
    )  # CEST
    assert closes_at([daily], berlin(2027, 3, 28, 1, 30)) == berlin(2027, 3, 28, 3, 0)
    # an opening inside the skipped hour opens when the clock has jumped
    skipped = parse_window("daily 02:30-04:00 Europe/Berlin")
    opens = next_opening([skipped], berlin(2027, 3, 28, 0, 0))
    assert opens is not None
    assert berlin(2027, 3, 28, 3, 0) <= opens <= berlin(2027, 3, 28, 3, 30)


@pytest.mark.parametrize(
    "text",
    [
        "Mon-Fri 22:00-05:00",  # no time zone
        "Mon-Fri 22:00-05:00 Mars/Olympus",
        "Funday 22:00-05:00 UTC",
        "Mon 25:00-26:00 UTC",
        "Mon 10:60-11:00 UTC",
        "Mon 10:00-10:00 UTC",
        "Mon 24:00-02:00 UTC",
        "Mon 10:00-11:00 UTC " + "x" * 200,
    ],
)
def test_a_malformed_window_is_refused_with_the_reason(text: str) -> None:
    with pytest.raises(InvalidWindow) as refused:
        parse_window(text)
    assert refused.value.code == "invalid_request"


def test_day_ranges_wrap_around_the_week() -> None:
    assert parse_window("Fri-Mon 00:00-01:00 UTC").days == frozenset({4, 5, 6, 0})
    assert parse_window("daily 00:00-24:00 UTC").length == timedelta(hours=24)

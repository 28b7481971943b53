from datetime import UTC, datetime, timedelta, timezone

import pytest

from controller.model.conditions import Condition, ConditionType, make_condition, rfc3339

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def ready(status: bool, reason: str = "AllReplicasReady", **kwargs: object) -> Condition:
    arguments: dict[str, object] = {
        "type_": ConditionType.READY,
        "status": status,
        "reason": reason,
        "message": "m",
        "generation": 3,
        "previous": [],
        "now": T0,
    }
    return make_condition(**(arguments | kwargs))  # type: ignore[arg-type]


def test_rfc3339_is_utc_whole_seconds_with_z() -> None:
    assert rfc3339(moment=T0) == "2025-01-02T03:04:05Z"
    plus_two = datetime(2025, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(moment=plus_two) == "2025-01-02T03:04:05Z"


def test_rfc3339_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        rfc3339(moment=datetime(2025, 1, 2))


def test_as_dict_has_the_metav1_shape() -> None:
    assert ready(True).as_dict() == {
        "type": "Ready",
        "status": "True",
        "reason": "AllReplicasReady",
        "message": "m",
        "observedGeneration": 3,
        "lastTransitionTime": "2025-01-02T03:04:05Z",
    }


def test_transition_time_is_kept_while_the_status_holds() -> None:
    first = ready(False, "ScalingUp").as_dict()
    again = ready(False, "RollingUpdate", previous=[first], now=T1)
    assert again.last_transition_time == first["lastTransitionTime"]
    assert again.reason == "RollingUpdate"


def test_transition_time_moves_when_the_status_flips() -> None:
    first = ready(False, "ScalingUp").as_dict()
    flipped = ready(True, previous=[first], now=T1)
    assert flipped.last_transition_time == "2025-01-02T03:09:05Z"


def test_other_condition_types_do_not_lend_their_time() -> None:
    other = {"type": "Stalled", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}
    assert ready(True, previous=[other]).last_transition_time == "2025-01-02T03:04:05Z"


def test_messages_are_collapsed_to_one_line_within_the_api_limit() -> None:
    assert ready(True, message="two\nlines\r\n  here\u2028too").message == "two lines here too"
    assert len(ready(True, message="x" * 40000).message) == 32768


def test_overlong_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="reason"):
        ready(True, "R" * 1025)


@pytest.mark.parametrize("reason", ["", "has space", "9Lives", "Trailing,", "dash-ed"])
def test_reason_must_be_a_camel_case_token(reason: str) -> None:
    with pytest.raises(ValueError, match="reason"):
        ready(True, reason)


def test_condition_refuses_a_multi_line_message() -> None:
    with pytest.raises(ValueError, match="one line"):
        Condition(
            type=ConditionType.READY,
            status=True,
            reason="Ok",
            message="a\u2029b",
            observed_generation=1,
            last_transition_time="2025-01-02T03:04:05Z",
        )

"""X-Request-Timeout-Ms: parsed, capped by the service's own timeout, refused when malformed."""

import pytest

from service_common.deadline import Deadline, deadline_from
from service_common.errors import InvalidRequestError


def test_the_header_sets_the_budget_capped_by_the_default() -> None:
    assert 0.24 < deadline_from("250", 30.0).remaining_s() <= 0.25
    assert 9.9 < deadline_from("60000", 10.0).remaining_s() <= 10.0
    assert 29.9 < deadline_from(None, 30.0).remaining_s() <= 30.0


@pytest.mark.parametrize("value", ["", "abc", "-5", "0", "nan", "inf", "1e400"])
def test_a_malformed_header_is_a_400_naming_it(value: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        deadline_from(value, 30.0)
    assert caught.value.param == "X-Request-Timeout-Ms"


def test_a_hop_gets_the_lesser_of_its_timeout_and_what_is_left() -> None:
    deadline = Deadline(0.5)
    assert deadline.budget_s(2.0) <= 0.5
    assert deadline.budget_s(0.1) == 0.1
    assert Deadline.header_value(0.2504) == "250"
    assert Deadline.header_value(0.0) == "1"

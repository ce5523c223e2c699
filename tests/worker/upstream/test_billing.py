"""What a selection answer says it charged (docs/kling-api.md, "Accounts, limits and billing"):
``final_unit_deduction`` and ``final_balance_deduction``, as numbers or as strings."""

from __future__ import annotations

from typing import Any

import pytest

from contract.results import Billing
from tests.worker.upstream.test_answers import JSON, kling, success_data
from worker.errors import VideoRejected
from worker.upstream.answers import read_answer


def billing_of(**fields: Any) -> Billing | None:
    data = success_data(**fields)
    for name in ("final_unit_deduction", "final_balance_deduction"):
        if fields.get(name, ...) is None:
            del data[name]
    return read_answer(200, JSON, kling(0, data)).billing


def test_numbers_are_read_as_they_are() -> None:
    billing = billing_of(
        final_unit_deduction=2, final_balance_deduction={"quota": 2, "list_price": 0.28}
    )
    assert billing == Billing(units=2.0, quota=2.0, list_price=0.28)


def test_numbers_sent_as_strings_are_read_as_numbers() -> None:
    billing = billing_of(
        final_unit_deduction="1",
        final_balance_deduction={"quota": " 1.5 ", "list_price": "0.14"},
    )
    assert billing == Billing(units=1.0, quota=1.5, list_price=0.14)
    assert billing is not None
    assert isinstance(billing.units, float)


def test_each_missing_figure_is_none() -> None:
    assert billing_of(final_unit_deduction="1", final_balance_deduction=None) == Billing(units=1.0)
    assert billing_of(
        final_unit_deduction=None, final_balance_deduction={"list_price": 0.14}
    ) == Billing(list_price=0.14)


def test_an_answer_without_billing_has_none() -> None:
    assert billing_of(final_unit_deduction=None, final_balance_deduction=None) is None


@pytest.mark.parametrize("value", ["", "one", "NaN", "inf", True, [], {"units": 1}, None])
def test_what_is_not_a_finite_number_is_none(value: object) -> None:
    billing = billing_of(final_unit_deduction=value, final_balance_deduction={"quota": 1})
    assert billing == Billing(quota=1.0)


def test_a_deduction_that_is_not_an_object_is_ignored() -> None:
    assert billing_of(final_unit_deduction=None, final_balance_deduction="0.14") is None


def test_a_clip_rejection_keeps_what_it_charged() -> None:
    data = {"status": 2, "message": "duration", "final_unit_deduction": "1"}
    with pytest.raises(VideoRejected) as caught:
        read_answer(200, JSON, kling(0, data))
    assert caught.value.billing == Billing(units=1.0)

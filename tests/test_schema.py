"""ffe_engine/schema.py: the typed sections that settings and control arguments are made of. Lax mode reads text
as the number or boolean it spells, strict mode takes each value only as its own type; every problem is listed with
where it is and a message in a fixed wording (config.py and api.py turn them into one-line errors)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest

from ffe_engine.schema import (AfterValidator, BeforeValidator, Field, SecretStr, Section, ValidationError,
                               ValidationInfo, field_validator)


class Inner(Section):
    n: int = Field(1, ge=1, le=10)


class Outer(Section):
    name: Annotated[str, Field(min_length=1, pattern=r"^[a-z]+$")] = "x"
    ratio: float = Field(0.5, gt=0, lt=1)
    flag: bool = False
    kind: Literal["a", "b", "c"] = "a"
    items: list[int] = Field(default_factory=lambda: [1], min_length=1)
    table: dict[Annotated[str, Field(min_length=1)], int] = Field(default_factory=dict)
    limit: int | None = Field(None, ge=0)
    token: SecretStr | None = None
    inner: Inner = Field(default_factory=Inner)
    _seen: list[str] = Field(default_factory=list)


def problems(cls: type[Section], data: Any, strict: bool = False) -> list[tuple[tuple, str, str]]:
    with pytest.raises(ValidationError) as caught:
        cls.model_validate(data, strict=strict)
    return [(e["loc"], e["type"], e["msg"]) for e in caught.value.errors()]


def test_defaults_and_a_whole_valid_section():
    o = Outer()
    assert (o.name, o.ratio, o.flag, o.kind, o.items, o.table, o.limit, o.token, o.inner.n) == (
        "x", 0.5, False, "a", [1], {}, None, None, 1)
    o = Outer.model_validate({"name": "abc", "ratio": 0.25, "flag": True, "kind": "c", "items": [3, 4],
                              "table": {"k": 2}, "limit": 0, "token": "s3cr3t", "inner": {"n": 10}})
    assert (o.name, o.items, o.table, o.limit, o.inner) == ("abc", [3, 4], {"k": 2}, 0, Inner(n=10))
    assert o.token == SecretStr("s3cr3t")
    assert o.model_dump()["inner"] == {"n": 10}


def test_lax_mode_reads_text_as_what_it_spells_and_strict_mode_takes_only_the_type_itself():
    o = Outer.model_validate({"ratio": " 0.75 ", "flag": "true", "items": ["2", "3.0"], "inner": {"n": "4"}})
    assert (o.ratio, o.flag, o.items, o.inner.n) == (0.75, True, [2, 3], 4)
    assert problems(Outer, {"ratio": "0.75", "flag": "true", "items": [True], "inner": {"n": 4.0}}, strict=True) == [
        (("ratio",), "float_type", "Input should be a valid number"),
        (("flag",), "bool_type", "Input should be a valid boolean"),
        (("items", 0), "int_type", "Input should be a valid integer"),
        (("inner", "n"), "int_type", "Input should be a valid integer")]
    assert Outer.model_validate({"ratio": 1 // 2 + 0.5, "inner": {"n": 3}}, strict=True).ratio == 0.5
    assert problems(Outer, {"items": ["3.5", "1e3", "x"]}) == [
        (("items", 0), "int_parsing", "Input should be a valid integer, unable to parse string as an integer"),
        (("items", 1), "int_parsing", "Input should be a valid integer, unable to parse string as an integer"),
        (("items", 2), "int_parsing", "Input should be a valid integer, unable to parse string as an integer")]
    assert problems(Outer, {"items": [2.5]}) == [
        (("items", 0), "int_from_float", "Input should be a valid integer, got a number with a fractional part")]


def test_numbers_are_finite_in_either_mode():
    for strict in (False, True):
        for value in (float("nan"), float("inf"), float("-inf")):
            assert problems(Outer, {"ratio": value}, strict) == [
                (("ratio",), "finite_number", "Input should be a finite number")]
    assert problems(Outer, {"ratio": "nan"}) == [(("ratio",), "finite_number", "Input should be a finite number")]


def test_every_problem_is_listed_with_where_it_is_and_its_wording():
    found = problems(Outer, {"name": "", "ratio": 1, "kind": "d", "items": [], "table": {"": 1, "k": "x"},
                             "limit": -1, "token": 5, "inner": {"n": 11, "m": 1}, "other": 1})
    assert found == [
        (("name",), "string_too_short", "String should have at least 1 character"),
        (("ratio",), "less_than", "Input should be less than 1"),
        (("kind",), "literal_error", "Input should be 'a', 'b' or 'c'"),
        (("items",), "too_short", "List should have at least 1 item after validation, not 0"),
        (("table", "", "[key]"), "string_too_short", "String should have at least 1 character"),
        (("table", "k"), "int_parsing", "Input should be a valid integer, unable to parse string as an integer"),
        (("limit",), "greater_than_equal", "Input should be greater than or equal to 0"),
        (("token",), "string_type", "Input should be a valid string"),
        (("inner", "n"), "less_than_equal", "Input should be less than or equal to 10"),
        (("inner", "m"), "extra_forbidden", "Extra inputs are not permitted"),
        (("other",), "extra_forbidden", "Extra inputs are not permitted")]
    assert problems(Outer, {"name": "ABC"}) == [
        (("name",), "string_pattern_mismatch", "String should match pattern '^[a-z]+$'")]
    assert problems(Outer, {"inner": 3}) == [
        (("inner",), "model_type", "Input should be a valid dictionary or instance of Inner")]
    assert problems(Outer, [1]) == [((), "model_type", "Input should be a valid dictionary or instance of Outer")]


def test_a_required_field_and_bounds_shown_as_written():
    class Needs(Section):
        id: str = Field(min_length=1, max_length=3)
        step: float = Field(1.0, ge=1e-12, le=1e6)

    assert problems(Needs, {}) == [(("id",), "missing", "Field required")]
    assert problems(Needs, {"id": "abcd", "step": 0}) == [
        (("id",), "string_too_long", "String should have at most 3 characters"),
        (("step",), "greater_than_equal", "Input should be greater than or equal to 0.000000000001")]
    assert problems(Needs, {"id": "a", "step": 2e6})[0][2] == "Input should be less than or equal to 1000000"


CALLS: list[str] = []  # what the validators of Checked were called with, in order


def before(v: Any) -> Any:
    CALLS.append(f"before {v!r}")
    return v.strip() if isinstance(v, str) else v


def after(v: str) -> str:
    CALLS.append(f"after {v!r}")
    if v == "bad":
        raise ValueError("is bad")
    return v.upper()


class Checked(Section):  # annotations are read in the module's namespace: a section is declared at module level
    low: int = 1
    word: Annotated[str, BeforeValidator(before), AfterValidator(after)] = "w"
    high: int = Field(2, validate_default=True)

    @field_validator("high")
    @classmethod
    def _above_low(cls, value: int, info: ValidationInfo) -> int:
        CALLS.append(f"high sees {sorted(info.data)}")
        if "low" in info.data and value <= info.data["low"]:
            raise ValueError(f"must be above low = {info.data['low']}")
        return value


def test_validators_run_in_order_and_a_field_validator_sees_the_fields_checked_before_it():
    CALLS.clear()
    c = Checked.model_validate({"word": " hi "})
    assert (c.word, c.high) == ("HI", 2)
    assert CALLS == ["before ' hi '", "after 'hi'", "high sees ['low', 'word']"]
    assert problems(Checked, {"low": 5}) == [(("high",), "value_error", "Value error, must be above low = 5")]
    assert problems(Checked, {"low": "x", "word": "bad"}) == [
        (("low",), "int_parsing", "Input should be a valid integer, unable to parse string as an integer"),
        (("word",), "value_error", "Value error, is bad")]  # and `high` was checked without the failed `low`


def test_a_secret_never_shows_its_value():
    secret = SecretStr("hunter2")
    assert "hunter2" not in f"{secret} {secret!r} {Outer(token='hunter2')!r}"
    assert secret.get_secret_value() == "hunter2" and secret == SecretStr("hunter2") != SecretStr("other")
    assert str(SecretStr("")) == ""


def test_assignment_is_checked_copies_are_not_and_a_frozen_section_refuses_assignment():
    o = Outer()
    o.ratio = "0.25"
    assert o.ratio == 0.25
    with pytest.raises(ValidationError, match="ratio: Input should be less than 1"):
        o.ratio = 2
    with pytest.raises(AttributeError):
        o.nothing = 1
    o._seen.append("x")
    copy = o.model_copy(update={"ratio": 7.0})
    assert (copy.ratio, copy._seen, o.ratio) == (7.0, ["x"], 0.25)

    class Fixed(Section):
        frozen = True
        n: int = 1

    with pytest.raises(AttributeError, match="frozen"):
        Fixed().n = 2


def test_the_fields_are_listed_with_their_plain_types_and_bounds():
    fields = Outer.model_fields
    assert list(fields)[:3] == ["name", "ratio", "flag"] and "_seen" not in fields
    assert fields["name"].annotation is str and fields["inner"].annotation is Inner
    bounds = {type(m).__name__: getattr(m, m.__slots__[0]) for m in fields["ratio"].metadata}
    assert bounds == {"Gt": 0, "Lt": 1}
    assert [type(m).__name__ for m in fields["name"].metadata] == ["MinLen", "Pattern"]

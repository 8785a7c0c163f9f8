"""Typed sections of settings and arguments: classes whose annotated fields are checked when an instance is made.

A section is declared as a class of `Section` with annotated fields (`int`, `float`, `bool`, `str`, `Literal`,
`list[...]`, `dict[..., ...]`, `X | None`, `SecretStr`, `Any`, another section), each with a default or required,
bounded with `Field(ge=..., le=..., min_length=..., pattern=...)` or `Annotated[T, Field(...)]`, and checked further
with `AfterValidator`, `BeforeValidator` and `@field_validator`. `Section.model_validate(data)` takes a plain
mapping (from TOML, the environment or JSON) and returns the section, or raises ValidationError listing every
problem with where it is (`loc`), what kind it is (`type`) and a message in a fixed wording (`msg`). Annotations are
read in the namespace of the module that declares the section, so sections are declared at a module's top level.

Two modes: lax (the default) reads text as the number or boolean it spells (values from the environment are
text), strict (`strict=True`) takes each value only as its own type (a TOML value has its type, and a control
command's arguments come as JSON). Floats must be finite. Unknown keys are refused.

This is the part of pydantic's model API that ffe uses (same names, same messages), kept here because every `ffe`
process reads its settings before anything else, and importing and building pydantic's models cost each of them
about 0.1 s of CPU: most of what a short command such as `ffe ctl halt` spends.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self, Union, get_args, get_origin

__all__ = ["AfterValidator", "BeforeValidator", "Field", "FieldInfo", "SecretStr", "Section", "ValidationError",
           "ValidationInfo", "field_validator"]

_MISSING: Any = object()
Loc = tuple[Any, ...]


class SecretStr:
    """A secret string: shown as asterisks, its value only through get_secret_value()."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __repr__(self) -> str:
        return f"SecretStr('{self}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Gt:
    __slots__ = ("gt",)

    def __init__(self, gt: Any) -> None:
        self.gt = gt


class Ge:
    __slots__ = ("ge",)

    def __init__(self, ge: Any) -> None:
        self.ge = ge


class Lt:
    __slots__ = ("lt",)

    def __init__(self, lt: Any) -> None:
        self.lt = lt


class Le:
    __slots__ = ("le",)

    def __init__(self, le: Any) -> None:
        self.le = le


class MinLen:
    __slots__ = ("min_length",)

    def __init__(self, min_length: int) -> None:
        self.min_length = min_length


class MaxLen:
    __slots__ = ("max_length",)

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length


class Pattern:
    __slots__ = ("pattern",)

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern


class AfterValidator:
    __slots__ = ("func",)

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func


class BeforeValidator:
    __slots__ = ("func",)

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func


Constraint = Union[Gt, Ge, Lt, Le, MinLen, MaxLen, Pattern]


class FieldInfo:
    """A field: its type (Annotated taken apart), default, constraints (`metadata`) and validators."""

    def __init__(self, default: Any = _MISSING, *, default_factory: Callable[[], Any] | None = None,
                 metadata: Iterable[Constraint] = (), validate_default: bool = False) -> None:
        self.default = default
        self.default_factory = default_factory
        self.validate_default = validate_default  # the field validators check the default too
        self.metadata: list[Any] = list(metadata)
        self.annotation: Any = Any
        self.checker: _Checker | None = None  # built with the class

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.default_factory is None

    def get_default(self) -> Any:
        return self.default_factory() if self.default_factory is not None else self.default


def Field(default: Any = _MISSING, *, default_factory: Callable[[], Any] | None = None, gt: Any = None,
          ge: Any = None, lt: Any = None, le: Any = None, min_length: int | None = None,
          max_length: int | None = None, pattern: str | None = None, validate_default: bool = False) -> Any:
    """A field's default and constraints, as the default value of a field or inside Annotated[...]. Numbers are
    always finite."""
    parts: list[Constraint] = []
    for value, kind in ((gt, Gt), (ge, Ge), (lt, Lt), (le, Le)):
        if value is not None:
            parts.append(kind(value))
    if min_length is not None:
        parts.append(MinLen(min_length))
    if max_length is not None:
        parts.append(MaxLen(max_length))
    if pattern is not None:
        parts.append(Pattern(pattern))
    return FieldInfo(default, default_factory=default_factory, metadata=parts, validate_default=validate_default)


class ValidationInfo:
    """What a field validator is told: `data`, the fields checked before it (those that passed)."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


class _FieldValidator:
    def __init__(self, names: tuple[str, ...], func: Any) -> None:
        self.names = names
        self.func = func


def field_validator(*names: str) -> Callable[[Any], Any]:
    """Decorate a classmethod `(cls, value[, info])` that checks (and may replace) the named fields' values after
    their own checks; a ValueError it raises is the field's error."""
    def mark(func: Any) -> Any:
        return _FieldValidator(names, func)
    return mark


class ValidationError(ValueError):
    """Every problem found, each a dict: `type`, `loc` (the path to the value), `msg`, `input`."""

    def __init__(self, title: str, problems: list[dict[str, Any]]) -> None:
        self.title = title
        self._problems = problems
        first = problems[0] if problems else {"loc": (), "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"])
        super().__init__(f"{len(problems)} validation error(s) for {title}: {where}: {first['msg']}")

    def errors(self, *, include_url: bool = True, include_input: bool = True) -> list[dict[str, Any]]:
        return [p if include_input else {k: v for k, v in p.items() if k != "input"} for p in self._problems]


class _Problems:
    def __init__(self) -> None:
        self.found: list[dict[str, Any]] = []

    def add(self, loc: Loc, kind: str, msg: str, value: Any) -> None:
        self.found.append({"type": kind, "loc": loc, "msg": msg, "input": value})


class _Invalid(Exception):
    def __init__(self, kind: str, msg: str) -> None:
        super().__init__(msg)
        self.kind = kind
        self.msg = msg


# ---------------------------------------------------------------------------------------------------------------
# Checkers: one per annotation, built once per class


class _Checker:
    def check(self, value: Any, loc: Loc, strict: bool, problems: _Problems) -> Any:
        """The value as the field holds it, or _MISSING after adding what is wrong with it to `problems`."""
        raise NotImplementedError


def _number_text(value: Any) -> str:
    """A bound as the messages give it: 1e-12 as 0.000000000001, 1e6 as 1000000."""
    if isinstance(value, float):
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


def _constraint_problem(value: Any, c: Any) -> tuple[str, str] | None:
    if isinstance(c, Gt) and not value > c.gt:
        return "greater_than", f"Input should be greater than {_number_text(c.gt)}"
    if isinstance(c, Ge) and not value >= c.ge:
        return "greater_than_equal", f"Input should be greater than or equal to {_number_text(c.ge)}"
    if isinstance(c, Lt) and not value < c.lt:
        return "less_than", f"Input should be less than {_number_text(c.lt)}"
    if isinstance(c, Le) and not value <= c.le:
        return "less_than_equal", f"Input should be less than or equal to {_number_text(c.le)}"
    if isinstance(c, MinLen) and len(value) < c.min_length:
        if isinstance(value, str):
            unit = "character" if c.min_length == 1 else "characters"
            return "string_too_short", f"String should have at least {c.min_length} {unit}"
        unit = "item" if c.min_length == 1 else "items"
        return "too_short", f"List should have at least {c.min_length} {unit} after validation, not {len(value)}"
    if isinstance(c, MaxLen) and len(value) > c.max_length:
        if isinstance(value, str):
            unit = "character" if c.max_length == 1 else "characters"
            return "string_too_long", f"String should have at most {c.max_length} {unit}"
        unit = "item" if c.max_length == 1 else "items"
        return "too_long", f"List should have at most {c.max_length} {unit} after validation, not {len(value)}"
    if isinstance(c, Pattern) and not re.search(c.pattern, value):
        return "string_pattern_mismatch", f"String should match pattern '{c.pattern}'"
    return None


class _Scalar(_Checker):
    """bool, int, float, str, SecretStr or Any, with constraints and validators around it."""

    def __init__(self, kind: Any) -> None:
        self.kind = kind

    def check(self, value: Any, loc: Loc, strict: bool, problems: _Problems) -> Any:
        try:
            return self.convert(value, strict)
        except _Invalid as exc:
            problems.add(loc, exc.kind, exc.msg, value)
            return _MISSING

    def convert(self, value: Any, strict: bool) -> Any:
        kind = self.kind
        if kind is Any:
            return value
        if kind is bool:
            return _to_bool(value, strict)
        if kind is int:
            return _to_int(value, strict)
        if kind is float:
            return _to_float(value, strict)
        if kind is str:
            if isinstance(value, str):
                return value
            raise _Invalid("string_type", "Input should be a valid string")
        if kind is SecretStr:
            if isinstance(value, SecretStr):
                return value
            if isinstance(value, str):
                return SecretStr(value)
            raise _Invalid("string_type", "Input should be a valid string")
        raise TypeError(f"unsupported field type {kind!r}")


_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})
_INT_TEXT = re.compile(r"([+-]?\d+(?:_\d+)*)(?:\.0*)?")  # "3" and "3.0" are 3; "3.5" and "1e3" are no integer


def _to_bool(value: Any, strict: bool) -> bool:
    if isinstance(value, bool):
        return value
    if not strict:
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            text = value.strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise _Invalid("bool_parsing", "Input should be a valid boolean, unable to interpret input")
    raise _Invalid("bool_type", "Input should be a valid boolean")


def _to_int(value: Any, strict: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not strict:
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise _Invalid("finite_number", "Input should be a finite number")
            if value.is_integer():
                return int(value)
            raise _Invalid("int_from_float", "Input should be a valid integer, got a number with a fractional part")
        if isinstance(value, str):
            match = _INT_TEXT.fullmatch(value.strip())
            if match:
                return int(match.group(1))
            raise _Invalid("int_parsing", "Input should be a valid integer, unable to parse string as an integer")
    raise _Invalid("int_type", "Input should be a valid integer")


def _to_float(value: Any, strict: bool) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif not strict and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Invalid("float_parsing", "Input should be a valid number, unable to parse string as a number") \
                from None
    else:
        raise _Invalid("float_type", "Input should be a valid number")
    if number != number or number in (float("inf"), float("-inf")):
        raise _Invalid("finite_number", "Input should be a finite number")
    return number


class _Literal(_Checker):
    def __init__(self, choices: tuple[Any, ...]) -> None:
        self.choices = choices
        shown = [repr(c) for c in choices]
        listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
        self.msg = f"Input should be {listed}"

    def check(self, value: Any, loc: Loc, strict: bool, problems: _Problems) -> Any:
        for choice in self.choices:
            if type(value) is type(choice) and value == choice:
                return choice
        problems.add(loc, "literal_error", self.msg, value)
        return _MISSING


class _List(_Checker):
    def __init__(self, item: _Checker) -> None:
        self.item = item

    def check(self, value: Any, loc: Loc, strict: bool, problems: _Problems) -> Any:
        if not isinstance(value, list) and (strict or not isinstance(value, tuple)):
            problems.add(loc, "list_type", "Input should be a valid list", value)
            return _MISSING
        before = len(problems.found)
        out = [self.item.check(v, (*loc, i), strict, problems) for i, v in enumerate(value)]
        return _MISSING if len(problems.found) > before else out


class _Dict(_Checker):
    def __init__(self, key: _Checker, value: _Checker) -> None:
        self.key = key
        self.value = value

    def check(self, value: Any, loc: Loc, strict: bool, problems: _Problems) -> Any:
        if not isinstance(value, dict):
            problems.add(loc, "dict_type", "Input should be a valid dictionary", value)
            return _MISSING
        before = len(problems.found)
        out = {}
        for k, v in value.items():
            key = self.key.check(k, (*loc, k, "[key]"), strict, problems)
            out[key] = self.value.check(v, (*loc, k), strict, problems)
        return _MISSING if len(problems.found) > before else out


class _Optional(_Checker):
    def __init__(self, inner: _Checker) -> None:
        self.inner = inner

    def check(self, value: Any, loc: Loc, strict: bool, problems: _Problems) -> Any:
        return None if value is None else self.inner.check(value, loc, strict, problems)


class _Nested(_Checker):
    def __init__(self, section: type[Section]) -> None:
        self.section = section

    def check(self, value: Any, loc: Loc, strict: bool, problems: _Problems) -> Any:
        if isinstance(value, self.section):
            return value
        if not isinstance(value, dict):
            problems.add(loc, "model_type", f"Input should be a valid dictionary or instance of "
                                            f"{self.section.__name__}", value)
            return _MISSING
        return self.section._build(value, loc, strict, problems)


class _Around(_Checker):
    """Before-validators, the inner check, constraints, then after-validators, as Annotated[...] lists them."""

    def __init__(self, inner: _Checker, before: list[Callable[[Any], Any]], constraints: list[Any],
                 after: list[Callable[[Any], Any]]) -> None:
        self.inner = inner
        self.before = before
        self.constraints = constraints
        self.after = after

    def check(self, value: Any, loc: Loc, strict: bool, problems: _Problems) -> Any:
        original = value
        try:
            for func in self.before:
                value = func(value)
        except ValueError as exc:
            problems.add(loc, "value_error", f"Value error, {exc}", original)
            return _MISSING
        value = self.inner.check(value, loc, strict, problems)
        if value is _MISSING:
            return value
        for c in self.constraints if value is not None else ():
            problem = _constraint_problem(value, c)
            if problem is not None:
                problems.add(loc, problem[0], problem[1], original)
                return _MISSING
        try:
            for func in self.after:
                value = func(value)
        except ValueError as exc:
            problems.add(loc, "value_error", f"Value error, {exc}", original)
            return _MISSING
        return value


def _checker(annotation: Any, extra: list[Any] | None = None) -> _Checker:
    """The checker of an annotation, with the constraints and validators of Annotated[...] around it."""
    parts = list(extra or [])
    while get_origin(annotation) is Annotated:
        args = get_args(annotation)
        annotation, parts = args[0], [*args[1:], *parts]
    before: list[Callable[[Any], Any]] = []
    after: list[Callable[[Any], Any]] = []
    constraints: list[Any] = []
    for part in parts:
        if isinstance(part, FieldInfo):
            constraints.extend(part.metadata)
        elif isinstance(part, BeforeValidator):
            before.insert(0, part.func)  # the outermost runs first
        elif isinstance(part, AfterValidator):
            after.append(part.func)
        else:
            constraints.append(part)
    inner = _bare(annotation)
    if not (before or after or constraints):
        return inner
    return _Around(inner, before, constraints, after)


def _bare(annotation: Any) -> _Checker:
    origin = get_origin(annotation)
    if origin is Literal:
        return _Literal(get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        return _List(_checker(item))
    if origin is dict:
        key, value = get_args(annotation)
        return _Dict(_checker(key), _checker(value))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1 or len(args) == len(get_args(annotation)):
            raise TypeError(f"unsupported union {annotation!r}: only X | None")
        return _Optional(_checker(args[0]))
    if origin is Annotated:
        return _checker(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return _Nested(annotation)
    if annotation in (bool, int, float, str, SecretStr) or annotation is Any:
        return _Scalar(annotation)
    raise TypeError(f"unsupported field type {annotation!r}")


def _plain(annotation: Any) -> Any:
    """The type a field holds, Annotated taken off (as FieldInfo.annotation shows it)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


# ---------------------------------------------------------------------------------------------------------------
# Sections


class Section:
    """A section of settings or of a command's arguments: annotated fields, checked whenever one is made.
    Subclasses declare their fields; `model_fields` lists them in order."""

    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    frozen: ClassVar[bool] = False  # True: no field is ever assigned after the section is made
    _validators: ClassVar[dict[str, list[tuple[Callable[..., Any], bool]]]] = {}
    _private: ClassVar[dict[str, Callable[[], Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        namespace = vars(sys.modules[cls.__module__])
        fields: dict[str, FieldInfo] = {}
        private: dict[str, Callable[[], Any]] = {}
        for base in reversed(cls.__mro__[1:]):
            fields.update(getattr(base, "model_fields", {}))
            private.update(getattr(base, "_private", {}))
        for name, written in cls.__dict__.get("__annotations__", {}).items():
            # The class's own annotations, as written (text under `from __future__ import annotations`), read in
            # its module's namespace: what typing.get_type_hints does, at a quarter of its cost.
            annotation = eval(written, namespace, dict(vars(cls))) if isinstance(written, str) else written
            if get_origin(annotation) is ClassVar:
                continue
            declared = cls.__dict__.get(name, _MISSING)
            if name.startswith("_"):  # state of an instance's own, not a field (e.g. where the values came from)
                if not (isinstance(declared, FieldInfo) and declared.default_factory is not None):
                    raise TypeError(f"{cls.__name__}.{name}: give a private attribute as Field(default_factory=...)")
                private[name] = declared.default_factory
                if name in cls.__dict__:
                    delattr(cls, name)
                continue
            info = declared if isinstance(declared, FieldInfo) else FieldInfo(declared)
            nested = [p for p in get_args(annotation)[1:] if isinstance(p, FieldInfo)] \
                if get_origin(annotation) is Annotated else []
            field = FieldInfo(info.default, default_factory=info.default_factory,
                              metadata=[*(m for p in nested for m in p.metadata), *info.metadata],
                              validate_default=info.validate_default)
            field.annotation = _plain(annotation)
            field.checker = _checker(annotation, list(info.metadata))
            fields[name] = field
            if name in cls.__dict__:
                delattr(cls, name)
        validators: dict[str, list[tuple[Callable[..., Any], bool]]] = {}
        for base in reversed(cls.__mro__):
            for attr in list(vars(base).values()):
                if isinstance(attr, _FieldValidator):
                    func = attr.func.__get__(None, cls)
                    code = getattr(attr.func, "__func__", attr.func).__code__
                    takes_info = code.co_argcount > 2  # (cls, value, info)
                    for n in attr.names:
                        validators.setdefault(n, []).append((func, takes_info))
        cls.model_fields = fields
        cls._validators = validators
        cls._private = private

    def __init__(self, **data: Any) -> None:
        problems = _Problems()
        values = type(self)._check(data, (), False, problems)
        if problems.found:
            raise ValidationError(type(self).__name__, problems.found)
        self._set(values)

    # construction ----------------------------------------------------------------------------------------------
    @classmethod
    def model_validate(cls, data: Any, *, strict: bool = False) -> Self:
        """A section from a mapping (or the section itself); ValidationError lists every problem."""
        if isinstance(data, cls):
            return data
        problems = _Problems()
        if not isinstance(data, dict):
            problems.add((), "model_type", f"Input should be a valid dictionary or instance of {cls.__name__}", data)
            raise ValidationError(cls.__name__, problems.found)
        values = cls._check(data, (), strict, problems)
        if problems.found:
            raise ValidationError(cls.__name__, problems.found)
        obj = cls.__new__(cls)
        obj._set(values)
        return obj

    @classmethod
    def _build(cls, data: dict[str, Any], loc: Loc, strict: bool, problems: _Problems) -> Any:
        before = len(problems.found)
        values = cls._check(data, loc, strict, problems)
        if len(problems.found) > before:
            return _MISSING
        obj = cls.__new__(cls)
        obj._set(values)
        return obj

    @classmethod
    def _check(cls, data: dict[str, Any], loc: Loc, strict: bool, problems: _Problems) -> dict[str, Any]:
        checked: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            assert field.checker is not None
            given = name in data
            if given:
                value = field.checker.check(data[name], (*loc, name), strict, problems)
            elif field.required:
                problems.add((*loc, name), "missing", "Field required", data)
                continue
            else:
                value = field.get_default()
            if value is _MISSING:
                continue
            for func, takes_info in cls._validators.get(name, ()) if given or field.validate_default else ():
                try:
                    value = func(value, ValidationInfo(dict(checked))) if takes_info else func(value)
                except ValueError as exc:
                    problems.add((*loc, name), "value_error", f"Value error, {exc}", data.get(name))
                    value = _MISSING
                    break
            if value is not _MISSING:
                checked[name] = value
        for name in data:
            if name not in cls.model_fields:
                problems.add((*loc, name), "extra_forbidden", "Extra inputs are not permitted", data[name])
        return checked

    def _set(self, values: dict[str, Any]) -> None:
        d = self.__dict__
        d.update(values)
        for name, make in type(self)._private.items():
            d[name] = make()

    # use -------------------------------------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if type(self).frozen:
            raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be assigned")
        field = type(self).model_fields.get(name)
        if field is None:
            if name.startswith("_"):
                object.__setattr__(self, name, value)
                return
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        problems = _Problems()
        assert field.checker is not None
        checked = field.checker.check(value, (name,), False, problems)
        if problems.found:
            raise ValidationError(type(self).__name__, problems.found)
        self.__dict__[name] = checked

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Self:
        """A copy with `update`'s fields replaced, as given (not checked again)."""
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        if update:
            copy.__dict__.update(update)
        return copy

    def model_dump(self) -> dict[str, Any]:
        """The fields as plain data, sections as dicts (secrets stay SecretStr)."""
        return {name: _dump(self.__dict__[name]) for name in type(self).model_fields}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        names = type(self).model_fields
        return all(self.__dict__[n] == other.__dict__[n] for n in names)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={self.__dict__[n]!r}" for n in type(self).model_fields)
        return f"{type(self).__name__}({shown})"


def _dump(value: Any) -> Any:
    if isinstance(value, Section):
        return value.model_dump()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value

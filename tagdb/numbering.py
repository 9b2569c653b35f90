"""Run, luminosity-block and event numbers: unsigned 64-bit integers, exact on every backend.

Experiments number events with unsigned 64-bit integers, and some use the whole range (an
``EventNumber`` near 2^64 - 1). The TAG store keeps ``run``, ``lumi`` and ``event`` as:

==============  ===========================================================================
DuckDB          ``UBIGINT``
PostgreSQL      ``NUMERIC(20, 0)``
MySQL/MariaDB   ``BIGINT UNSIGNED``
Oracle          ``NUMBER(20)``
SQLite          ``INTEGER`` holding the number's 64 bits as a signed integer: a number below
                2^63 is stored as itself (so collections built before read the same), one
                from 2^63 up as ``number - 2^64`` (negative). SQLite has no unsigned or
                128-bit integer, and text would make every number slower to compare.
==============  ===========================================================================

A selection compares such a column with a whole number exactly on every backend, including
SQLite, where ``event > 9223372036854775807`` becomes a condition on the stored bits (a few
ORs and ANDs that still use the index). Where the number takes part in arithmetic or is
compared with another expression, it is its value: exact on the servers (as a 38-digit
decimal, which cannot overflow), and on SQLite exact below 2^63 and a double beyond.

Plain Python (SQLAlchemy and numpy; no Django), like the selection language that uses it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from dss.errors import InvalidInput

UINT64_MAX = 2**64 - 1
INT64_MAX = 2**63 - 1
_TWO_64 = 2**64

_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class UInt64(sa.types.TypeDecorator):
    """An unsigned 64-bit integer column (see the module's table for each backend).

    ``signed_bits`` says the column stores the number's bits as a signed integer (SQLite);
    the store sets it from the backend it creates the table on.
    """

    impl = sa.BigInteger
    cache_ok = True

    def __init__(self, signed_bits: bool = False):
        super().__init__()
        self.signed_bits = signed_bits

    def load_dialect_impl(self, dialect: sa.Dialect) -> Any:
        if dialect.name == "duckdb":
            from duckdb_engine.datatypes import UBigInteger

            return dialect.type_descriptor(UBigInteger())
        if dialect.name in ("postgresql", "oracle"):
            return dialect.type_descriptor(sa.Numeric(20, 0))
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.BIGINT(unsigned=True))
        return dialect.type_descriptor(sa.BigInteger())

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        number = int(value)
        if dialect.name == "sqlite":
            return to_signed_bits(number)
        return number

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        number = int(value)
        return number + _TWO_64 if number < 0 and dialect.name == "sqlite" else number


class WholeNumber(sa.types.TypeDecorator):
    """The type of a whole-number literal beyond int64 (up to 2^64 - 1) in a selection:
    bound exactly where the backend has a type for it, as a double on SQLite."""

    impl = sa.Numeric(20, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> Any:
        if dialect.name == "duckdb":
            from duckdb_engine.datatypes import HugeInteger

            return dialect.type_descriptor(HugeInteger())
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Double())
        return dialect.type_descriptor(sa.Numeric(20, 0))

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        return float(value) if dialect.name == "sqlite" else int(value)


def to_signed_bits(number: int) -> int:
    """The signed 64-bit integer with the same bits as the unsigned ``number``."""
    return number - _TWO_64 if number > INT64_MAX else number


def is_unsigned(column: Any) -> bool:
    """Whether ``column`` is a UInt64 column (a run, lumi or event number)."""
    return isinstance(getattr(column, "type", None), UInt64)


def unsigned_value(column: Any) -> sa.ColumnElement:
    """The number a UInt64 column holds, for arithmetic and comparisons with expressions:
    a 38-digit decimal on the servers (no overflow, no wrap-around); on SQLite the stored
    integer below 2^63 and a double from there up."""
    if column.type.signed_bits:
        return sa.case(
            (
                column < sa.literal(0, sa.BigInteger()),
                sa.cast(column, sa.Float()) + sa.literal(float(_TWO_64), sa.Double()),
            ),
            else_=column,
        )
    return sa.cast(column, sa.Numeric(38, 0))


class _SignFlipped(sa.types.TypeDecorator):
    """The sign-flipped bits of a SQLite UInt64 column: reads back as the number."""

    impl = sa.BigInteger
    cache_ok = True

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else int(value) + INT64_MAX + 1


def sort_key(column: Any) -> sa.ColumnElement:
    """An expression that orders as the numbers in ``column`` do (for ORDER BY, min and
    max); selected, it reads back as the number."""
    if is_unsigned(column) and column.type.signed_bits:
        # Flipping the sign bit turns unsigned order into signed order, exactly.
        one = sa.literal(1, sa.BigInteger())
        top = sa.literal(INT64_MAX, sa.BigInteger())
        flipped_bits = sa.case(
            (column < sa.literal(0, sa.BigInteger()), column + top + one), else_=column - top - one
        )
        return sa.type_coerce(flipped_bits, _SignFlipped())
    return column


def compare_unsigned(column: Any, op: str, value: int) -> sa.ColumnElement:
    """``column <op> value`` for a UInt64 column and a whole number, exact on every backend.

    A negative ``value`` lies below every unsigned number, so the comparison becomes one
    with 0. On SQLite, which stores the bits signed, the comparison is rewritten on the
    bits: numbers from 2^63 up are the negative ones.
    """
    if value < 0:
        op, value = ("<", 0) if op in ("<", "<=", "==") else (">=", 0)
    if not column.type.signed_bits:
        return _OPERATORS[op](column, sa.bindparam(None, value, type_=column.type))
    bits = sa.literal(to_signed_bits(value), sa.BigInteger())
    zero = sa.literal(0, sa.BigInteger())
    if op in ("==", "!="):
        return _OPERATORS[op](column, bits)
    same = _OPERATORS[op](column, bits)
    if value <= INT64_MAX:  # the stored negatives are the numbers from 2^63 up
        return sa.or_(same, column < zero) if op in (">", ">=") else sa.and_(column >= zero, same)
    return sa.and_(column < zero, same) if op in (">", ">=") else sa.or_(column >= zero, same)


def flipped(op: str) -> str:
    """The comparison with its sides swapped (``5 < x`` is ``x > 5``)."""
    return _FLIPPED[op]


def check_unsigned(value: int, what: str, where: str) -> int:
    """``value`` if it is a whole number from 0 to 2^64 - 1, else InvalidInput naming it."""
    if not 0 <= value <= UINT64_MAX:
        raise InvalidInput(
            f"{what} {value} is not a run or event number (whole numbers from 0 to {UINT64_MAX})",
            where=where,
        )
    return value


def numbering_array(values: Any, what: str, where: str) -> np.ndarray:
    """One unsigned 64-bit number per event from ``values`` (a numpy or awkward array of
    integers); a missing or negative number is an error naming ``what`` and the entry."""
    import awkward as ak

    array = ak.to_numpy(values, allow_missing=True) if isinstance(values, ak.Array) else values
    array = np.asarray(array) if not isinstance(array, np.ma.MaskedArray) else array
    if isinstance(array, np.ma.MaskedArray):
        missing = np.flatnonzero(np.ma.getmaskarray(array))
        if len(missing):
            raise InvalidInput(f"{what} is missing at entry {missing[0]}", where=where)
        array = array.filled(0)
    if array.dtype.kind == "i" and len(array):
        negative = np.flatnonzero(array < 0)
        if len(negative):
            raise InvalidInput(
                f"{what} is {array[negative[0]]} at entry {negative[0]}; run, lumi-block and "
                "event numbers are unsigned",
                where=where,
            )
    if array.dtype.kind not in "iu":
        raise InvalidInput(f"{what} must hold whole numbers, not {array.dtype}", where=where)
    return array.astype(np.uint64)

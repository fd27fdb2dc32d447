"""The QuickBooks query language (the documented subset), and change data capture."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from emulator import errors
from emulator.accounting import canonical_entity, stored_time
from emulator.clock import parse_time, response_time
from emulator.money import NotANumber, to_decimal
from emulator.store import ENTITY_TYPES, NAME_LISTS, READ_ONLY_LISTS, Company
from emulator.views import deleted_stub, plain, view

DEFAULT_MAX_RESULTS = 100
MAX_MAX_RESULTS = 1000
CDC_MAX_OBJECTS = 1000
CDC_MAX_DAYS = 30


@dataclass(frozen=True)
class Prop:
    """A filterable property: where it lives in the JSON, how it compares, whether ORDERBY accepts it."""

    name: str
    kind: str  # id | string | number | date | datetime | bool
    path: tuple[str, ...]
    sortable: bool = True


def _props(*specs: Prop) -> dict[str, Prop]:
    return {spec.name.lower(): spec for spec in specs}


_META = (
    Prop("MetaData.CreateTime", "datetime", ("MetaData", "CreateTime")),
    Prop("MetaData.LastUpdatedTime", "datetime", ("MetaData", "LastUpdatedTime")),
)

# What the read-only lists (TaxCode, TaxRate, CompanyCurrency) are filtered by, besides their own properties.
_LIST_BASICS = (
    Prop("Id", "id", ("Id",)),
    Prop("Name", "string", ("Name",)),
    Prop("Active", "bool", ("Active",)),
)

# Filterable properties per entity, from Intuit's entity reference pages (see the README for the sources).
PROPERTIES: dict[str, dict[str, Prop]] = {
    "Customer": _props(
        Prop("Id", "id", ("Id",)),
        Prop("DisplayName", "string", ("DisplayName",)),
        Prop("GivenName", "string", ("GivenName",)),
        Prop("MiddleName", "string", ("MiddleName",)),
        Prop("FamilyName", "string", ("FamilyName",)),
        Prop("CompanyName", "string", ("CompanyName",)),
        Prop("FullyQualifiedName", "string", ("FullyQualifiedName",)),
        Prop("PrintOnCheckName", "string", ("PrintOnCheckName",), sortable=False),
        Prop("PrimaryEmailAddr", "string", ("PrimaryEmailAddr", "Address")),
        Prop("PrimaryEmailAddr.Address", "string", ("PrimaryEmailAddr", "Address")),
        Prop("Active", "bool", ("Active",)),
        Prop("Balance", "number", ("Balance",)),
        Prop("BalanceWithJobs", "number", ("BalanceWithJobs",), sortable=False),
        Prop("Job", "bool", ("Job",), sortable=False),
        Prop("ParentRef", "id", ("ParentRef", "value"), sortable=False),
        *_META,
    ),
    "Item": _props(
        Prop("Id", "id", ("Id",)),
        Prop("Name", "string", ("Name",)),
        Prop("FullyQualifiedName", "string", ("FullyQualifiedName",)),
        Prop("Active", "bool", ("Active",)),
        Prop("Type", "string", ("Type",)),
        Prop("Sku", "string", ("Sku",)),
        Prop("Taxable", "bool", ("Taxable",), sortable=False),
        Prop("UnitPrice", "number", ("UnitPrice",)),
        Prop("ParentRef", "id", ("ParentRef", "value"), sortable=False),
        *_META,
    ),
    "Account": _props(
        Prop("Id", "id", ("Id",)),
        Prop("Name", "string", ("Name",)),
        Prop("FullyQualifiedName", "string", ("FullyQualifiedName",)),
        Prop("Active", "bool", ("Active",)),
        Prop("AccountType", "string", ("AccountType",)),
        Prop("AccountSubType", "string", ("AccountSubType",)),
        Prop("Classification", "string", ("Classification",)),
        Prop("AcctNum", "string", ("AcctNum",)),
        Prop("SubAccount", "bool", ("SubAccount",), sortable=False),
        Prop("ParentRef", "id", ("ParentRef", "value"), sortable=False),
        Prop("CurrentBalance", "number", ("CurrentBalance",)),
        Prop("CurrentBalanceWithSubAccounts", "number", ("CurrentBalanceWithSubAccounts",)),
        *_META,
    ),
    "Invoice": _props(
        Prop("Id", "id", ("Id",)),
        Prop("DocNumber", "string", ("DocNumber",)),
        Prop("TxnDate", "date", ("TxnDate",)),
        Prop("DueDate", "date", ("DueDate",)),
        Prop("CustomerRef", "id", ("CustomerRef", "value")),
        Prop("ClassRef", "id", ("ClassRef", "value")),
        Prop("DepartmentRef", "id", ("DepartmentRef", "value")),
        Prop("Balance", "number", ("Balance",)),
        Prop("TotalAmt", "number", ("TotalAmt",)),
        *_META,
    ),
    "Payment": _props(
        Prop("Id", "id", ("Id",)),
        Prop("TxnDate", "date", ("TxnDate",)),
        Prop("TotalAmt", "number", ("TotalAmt",)),
        Prop("CustomerRef", "id", ("CustomerRef", "value")),
        Prop("PaymentMethodRef", "id", ("PaymentMethodRef", "value")),
        Prop("PaymentRefNum", "string", ("PaymentRefNum",)),
        *_META,
    ),
    "TaxCode": _props(
        *_LIST_BASICS,
        Prop("Taxable", "bool", ("Taxable",), sortable=False),
        Prop("TaxGroup", "bool", ("TaxGroup",), sortable=False),
        *_META,
    ),
    "TaxRate": _props(*_LIST_BASICS, Prop("RateValue", "number", ("RateValue",)), *_META),
    "CompanyCurrency": _props(*_LIST_BASICS, Prop("Code", "string", ("Code",)), *_META),
    "CompanyInfo": _props(Prop("Id", "id", ("Id",)), *_META),
    "Preferences": _props(Prop("Id", "id", ("Id",)), *_META),
}

QUERYABLE = {name.lower(): name for name in PROPERTIES}
# Lists that hide inactive records unless the query mentions Active.
ACTIVE_ONLY = (*NAME_LISTS, *READ_ONLY_LISTS)


# --- tokens -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # word | string | number | symbol | end
    text: str
    column: int

    @property
    def upper(self) -> str:
        return self.text.upper()


_SYMBOLS = ("<=", ">=", "!=", "<>", "=", "<", ">", "(", ")", ",", "*")


def tokenize(statement: str) -> list[Token]:
    tokens: list[Token] = []
    index = 0
    length = len(statement)
    while index < length:
        char = statement[index]
        column = index + 1
        if char.isspace():
            index += 1
            continue
        if char == "'":
            # A backslash escapes the next character (\' and \\), as Intuit documents.
            index += 1
            text: list[str] = []
            while True:
                if index >= length:
                    raise errors.query_parse_error(
                        f"Lexical error at line 1, column {column}. Unterminated string."
                    )
                current = statement[index]
                if current == "\\" and index + 1 < length:
                    text.append(statement[index + 1])
                    index += 2
                    continue
                if current == "'":
                    index += 1
                    break
                text.append(current)
                index += 1
            tokens.append(Token("string", "".join(text), column))
            continue
        symbol = next((s for s in _SYMBOLS if statement.startswith(s, index)), None)
        if symbol is not None:
            tokens.append(Token("symbol", symbol, column))
            index += len(symbol)
            continue
        number_match = re.compile(r"-?\d+(\.\d+)?").match(statement, index)
        if number_match:
            tokens.append(Token("number", number_match.group(0), column))
            index = number_match.end()
            continue
        word_match = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*").match(statement, index)
        if word_match:
            tokens.append(Token("word", word_match.group(0), column))
            index = word_match.end()
            continue
        raise errors.query_parse_error(f'Lexical error at line 1, column {column}. Encountered: "{char}"')
    tokens.append(Token("end", "<EOF>", length + 1))
    return tokens


# --- syntax tree ------------------------------------------------------------------------------------------


@dataclass
class Condition:
    prop: Prop
    operator: str  # = < > <= >= IN LIKE
    values: list[Token]


@dataclass
class Query:
    entity: str
    count: bool
    conditions: list[Condition] = field(default_factory=list)
    order: list[tuple[Prop, bool]] = field(default_factory=list)  # (property, descending)
    start_position: int = 1
    max_results: int = DEFAULT_MAX_RESULTS
    filters_active: bool = False


class _Parser:
    def __init__(self, statement: str) -> None:
        self.tokens = tokenize(statement)
        self.position = 0

    def peek(self) -> Token:
        return self.tokens[self.position]

    def take(self) -> Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def fail(self, expected: str) -> errors.QBOError:
        token = self.peek()
        shown = token.text if token.kind != "string" else f"'{token.text}'"
        return errors.query_parse_error(
            f'Encountered " {shown} " at line 1, column {token.column}.\nWas expecting: {expected}'
        )

    def keyword(self, *words: str) -> Token:
        token = self.peek()
        if token.kind == "word" and token.upper in words:
            return self.take()
        raise self.fail(" | ".join(words))

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token.kind == "word" and token.upper in words

    def symbol(self, text: str) -> Token:
        token = self.peek()
        if token.kind == "symbol" and token.text == text:
            return self.take()
        raise self.fail(f'"{text}"')

    def parse(self) -> Query:
        self.keyword("SELECT")
        count = False
        if self.at_keyword("COUNT"):
            self.take()
            self.symbol("(")
            self.symbol("*")
            self.symbol(")")
            count = True
        elif self.peek().kind == "symbol" and self.peek().text == "*":
            self.take()
        else:
            raise self.fail('"*" | "count(*)"')
        self.keyword("FROM")
        entity_token = self.peek()
        if entity_token.kind != "word":
            raise self.fail("<ENTITY>")
        self.take()
        entity = QUERYABLE.get(entity_token.text.lower())
        if entity is None:
            known = canonical_entity(entity_token.text)
            raise errors.query_validation_error(
                f"{entity_token.text} is not a valid entity" if known is None else f"{known} is not queryable"
            )
        query = Query(entity=entity, count=count)
        if self.at_keyword("WHERE"):
            self.take()
            query.conditions.append(self.condition(entity))
            while self.at_keyword("AND"):
                self.take()
                query.conditions.append(self.condition(entity))
            if self.at_keyword("OR"):
                raise self.fail('"AND" (OR is not supported)')
        if self.at_keyword("ORDERBY", "ORDER"):
            if self.take().upper == "ORDER":
                self.keyword("BY")
            query.order.append(self.order_item(entity))
            while self.peek().kind == "symbol" and self.peek().text == ",":
                self.take()
                query.order.append(self.order_item(entity))
        seen: set[str] = set()
        while self.at_keyword("STARTPOSITION", "MAXRESULTS"):
            word = self.take().upper
            if word in seen:
                raise self.fail("<EOF>")
            seen.add(word)
            value = self.peek()
            if value.kind != "number" or "." in value.text:
                raise self.fail("<INTEGER>")
            self.take()
            if word == "STARTPOSITION":
                query.start_position = int(value.text)
            else:
                query.max_results = int(value.text)
        if self.peek().kind != "end":
            raise self.fail("<EOF>")
        query.filters_active = any(c.prop.name == "Active" for c in query.conditions)
        return query

    def property(self, entity: str) -> Prop:
        token = self.peek()
        if token.kind != "word":
            raise self.fail("<PROPERTY>")
        self.take()
        prop = PROPERTIES[entity].get(token.text.lower())
        if prop is None:
            raise errors.query_validation_error(f"property '{token.text}' is not queryable")
        return prop

    def condition(self, entity: str) -> Condition:
        prop = self.property(entity)
        token = self.peek()
        if token.kind == "symbol" and token.text in ("!=", "<>"):
            raise self.fail('"=" | "<" | ">" | "<=" | ">=" | "IN" | "LIKE"')
        if token.kind == "symbol" and token.text in ("=", "<", ">", "<=", ">="):
            self.take()
            return Condition(prop, token.text, [self.literal()])
        if self.at_keyword("IN"):
            self.take()
            self.symbol("(")
            values = [self.literal()]
            while self.peek().kind == "symbol" and self.peek().text == ",":
                self.take()
                values.append(self.literal())
            self.symbol(")")
            return Condition(prop, "IN", values)
        if self.at_keyword("LIKE"):
            self.take()
            value = self.peek()
            if value.kind != "string":
                raise self.fail("<STRING>")
            self.take()
            return Condition(prop, "LIKE", [value])
        raise self.fail('"=" | "<" | ">" | "<=" | ">=" | "IN" | "LIKE"')

    def literal(self) -> Token:
        token = self.peek()
        if token.kind in ("string", "number") or (token.kind == "word" and token.upper in ("TRUE", "FALSE")):
            return self.take()
        raise self.fail("<STRING> | <NUMBER> | true | false")

    def order_item(self, entity: str) -> tuple[Prop, bool]:
        token = self.peek()
        prop = self.property(entity)
        if not prop.sortable:
            raise errors.query_validation_error(f"property '{token.text}' is not sortable")
        descending = False
        if self.at_keyword("ASC", "DESC"):
            descending = self.take().upper == "DESC"
        return prop, descending


def parse(statement: str) -> Query:
    if not statement or not statement.strip():
        raise errors.query_parse_error('Encountered " <EOF> " at line 1, column 1.\nWas expecting: SELECT')
    return _Parser(statement).parse()


# --- evaluation -------------------------------------------------------------------------------------------


def _raw(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = body
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _id_value(value: Any) -> tuple[int, str]:
    text = str(value)
    return (int(text), text) if text.isdigit() else (2**62, text)


def _coerce(prop: Prop, token: Token) -> Any:
    """The literal as a comparable value of the property's type; a mismatch is a validation error."""
    invalid = errors.query_validation_error(f"value '{token.text}' is not valid for property '{prop.name}'")
    if prop.kind == "bool":
        text = token.text.lower()
        if text not in ("true", "false"):
            raise invalid
        return text == "true"
    if prop.kind == "number":
        try:
            return to_decimal(token.text)
        except NotANumber:
            raise invalid from None
    if prop.kind == "date":
        try:
            return date.fromisoformat(token.text[:10])
        except ValueError:
            raise invalid from None
    if prop.kind == "datetime":
        try:
            return parse_time(token.text)
        except ValueError:
            raise invalid from None
    if prop.kind == "id":
        return _id_value(token.text)
    return token.text.casefold()


def _value(prop: Prop, body: dict[str, Any]) -> Any:
    raw = _raw(body, prop.path)
    if raw is None:
        return None
    if prop.kind == "bool":
        return bool(raw)
    if prop.kind == "number":
        return to_decimal(raw)
    if prop.kind == "date":
        return date.fromisoformat(str(raw)[:10])
    if prop.kind == "datetime":
        return parse_time(str(raw))
    if prop.kind == "id":
        return _id_value(raw)
    return str(raw).casefold()


def _like(pattern: str) -> re.Pattern[str]:
    # Only % is a wildcard in QuickBooks' LIKE; everything else is literal.
    parts = [re.escape(part) for part in pattern.casefold().split("%")]
    return re.compile(".*".join(parts), re.DOTALL)


def _matcher(condition: Condition) -> Callable[[dict[str, Any]], bool]:
    prop = condition.prop
    if condition.operator == "LIKE":
        if prop.kind != "string":
            raise errors.query_validation_error(f"LIKE is not supported for property '{prop.name}'")
        regex = _like(condition.values[0].text)
        return lambda body: (value := _value(prop, body)) is not None and regex.fullmatch(value) is not None
    targets = [_coerce(prop, token) for token in condition.values]
    operator = condition.operator

    def matches(body: dict[str, Any]) -> bool:
        value = _value(prop, body)
        if value is None:
            return False
        if operator == "IN":
            return value in targets
        target = targets[0]
        if operator == "=":
            return bool(value == target)
        if operator == "<":
            return bool(value < target)
        if operator == ">":
            return bool(value > target)
        if operator == "<=":
            return bool(value <= target)
        return bool(value >= target)

    return matches


def _sort_key(prop: Prop, body: dict[str, Any]) -> tuple[int, Any]:
    value = _value(prop, body)
    if value is None:
        return (0, "")
    if isinstance(value, datetime):
        return (1, value.timestamp())
    if isinstance(value, Decimal | bool):
        return (1, Decimal(value))
    return (1, value)


def _default_order(entity: str) -> list[tuple[Prop, bool]]:
    """Observed orders without ORDERBY: transactions newest change first, name lists by name."""
    props = PROPERTIES[entity]
    if entity in ("Invoice", "Payment"):
        return [(props["metadata.lastupdatedtime"], True), (props["id"], True)]
    if entity in NAME_LISTS:
        return [(props["fullyqualifiedname"], False), (props["id"], False)]
    return [(props["id"], False)]


def _rows(company: Company, entity: str) -> list[dict[str, Any]]:
    if entity == "CompanyInfo":
        return [company.company_info]
    if entity == "Preferences":
        return [company.preferences]
    return list(company.table(entity).values())


def execute(company: Company, statement: str, now: datetime) -> dict[str, Any]:
    query = parse(statement)
    matchers = [_matcher(condition) for condition in query.conditions]
    if query.entity in ACTIVE_ONLY and not query.filters_active:
        # Name lists hide inactive records unless the query mentions Active.
        matchers.append(lambda body: body.get("Active", True) is not False)
    rows = [row for row in _rows(company, query.entity) if all(match(row) for match in matchers)]
    if query.count:
        return {"QueryResponse": {"totalCount": len(rows)}, "time": response_time(now)}
    # Stable sorts from the last key to the first give a multi-key ORDERBY with mixed directions.
    for prop, descending in reversed(query.order or _default_order(query.entity)):
        rows.sort(key=functools.partial(_sort_key, prop), reverse=descending)
    start = max(query.start_position, 1)
    limit = min(query.max_results, MAX_MAX_RESULTS)
    page = rows[start - 1 : start - 1 + limit] if limit > 0 else []
    if not page:
        return {"QueryResponse": {}, "time": response_time(now)}
    if query.entity in ("CompanyInfo", "Preferences"):
        printed = [plain(row) for row in page]
    else:
        printed = [view(company, query.entity, row, "query") for row in page]
    response: dict[str, Any] = {query.entity: printed, "startPosition": start, "maxResults": len(printed)}
    if query.entity == "Invoice":
        # Recorded Invoice pages carry totalCount (equal to the rows returned); Customer and Payment pages do not.
        response["totalCount"] = len(printed)
    return {"QueryResponse": response, "time": response_time(now)}


# --- change data capture ----------------------------------------------------------------------------------


def change_data_capture(
    company: Company, entities_param: str | None, since_param: str | None, now: datetime
) -> dict[str, Any]:
    if not entities_param:
        raise errors.required_param("entities")
    if not since_param:
        raise errors.required_param("changedSince")
    names = []
    for raw in entities_param.split(","):
        name = canonical_entity(raw.strip())
        if name not in ENTITY_TYPES:
            raise errors.invalid_property("entities", f"value {raw.strip()} is not a supported CDC entity")
        if name not in names:
            names.append(name)
    try:
        since = parse_time(since_param)
    except ValueError:
        raise errors.invalid_property("changedSince", "is not a valid date or date-time") from None
    if since < now - timedelta(days=CDC_MAX_DAYS):
        raise errors.business_error(
            f"Operation cdc with changedSince date {since_param} which is older than fixed days is not supported.",
        )
    budget = CDC_MAX_OBJECTS
    blocks: list[dict[str, Any]] = []
    for name in names:
        changed = [row for row in company.table(name).values() if stored_time(row) >= since]
        changed.sort(key=lambda row: (stored_time(row), _id_value(row["Id"])))
        deleted = [
            entry for entry in company.deleted if entry["entity"] == name and parse_time(entry["at"]) >= since
        ]
        items: list[dict[str, Any]] = [view(company, name, row, "read") for row in changed[:budget]]
        budget -= len(items)
        items.extend(deleted_stub(entry) for entry in deleted[: max(budget, 0)])
        budget = max(budget - len(deleted), 0)
        if items:
            blocks.append(
                {name: items, "startPosition": 1, "maxResults": len(items), "totalCount": len(items)}
            )
        else:
            blocks.append({})
    return {"CDCResponse": [{"QueryResponse": blocks}], "time": response_time(now)}

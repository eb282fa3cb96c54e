"""Query parameters -> a protobuf request message, read from the message's own descriptor.

One parameter per scalar field, named as the field (`detection_threshold`, `page_size`), so a
field added to AnalysisOptions or ListAnalysesRequest is a parameter at once, here and in the
OpenAPI document (`schema` below). Values:

- bool: true/false (or 1/0);
- numbers: decimal; integers must fit their field;
- enums: the value's name without the enum's prefix, any case (`age` for ACTION_AGE), or the full name;
- repeated fields: a comma-separated list, the parameter repeated, or both (`actions=age,gender`).

An unknown parameter, a repeated scalar or a value that does not parse is a 400 naming the
parameter and what it accepts: a typo must not silently fall back to a default. Ranges that
depend on the server (detection_threshold in (0, 1), ...) are the gRPC API's to check.
"""

from __future__ import annotations

import math
import re

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from faceanalysis.image_input.http.errors import ApiError

F = FieldDescriptor
INTEGERS = {F.TYPE_INT32: (-2**31, 2**31 - 1), F.TYPE_SINT32: (-2**31, 2**31 - 1), F.TYPE_SFIXED32: (-2**31, 2**31 - 1),
            F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1),
            F.TYPE_INT64: (-2**63, 2**63 - 1), F.TYPE_SINT64: (-2**63, 2**63 - 1), F.TYPE_SFIXED64: (-2**63, 2**63 - 1),
            F.TYPE_UINT64: (0, 2**64 - 1), F.TYPE_FIXED64: (0, 2**64 - 1)}
NUMBERS = (F.TYPE_FLOAT, F.TYPE_DOUBLE)
TRUE, FALSE = ("true", "1"), ("false", "0")


def fields(descriptor: Descriptor, exclude: tuple[str, ...] = ()) -> list[FieldDescriptor]:
    """The fields of a message that are query parameters: scalars, enums and repeated ones of those."""
    return [f for f in descriptor.fields
            if f.type not in (F.TYPE_MESSAGE, F.TYPE_GROUP, F.TYPE_BYTES) and f.name not in exclude]


def enum_prefix(enum: EnumDescriptor) -> str:
    """ACTION_ for enum Action, as protobuf's style guide prefixes value names."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def enum_names(enum: EnumDescriptor) -> dict[str, int]:
    """The short names a parameter accepts for an enum, without its zero (unspecified) value."""
    prefix = enum_prefix(enum)
    return {value.name.removeprefix(prefix).lower(): value.number for value in enum.values if value.number}


def _value(field: FieldDescriptor, text: str):
    name, text = field.name, text.strip()
    if field.type == F.TYPE_BOOL:
        if text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
        raise ApiError(400, f"{name} must be true or false, got {text[:40]!r}")
    if field.type in NUMBERS:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ApiError(400, f"{name} must be a decimal number, got {text[:40]!r}")
        return number
    if field.type in INTEGERS:
        low, high = INTEGERS[field.type]
        if not re.fullmatch(r"[+-]?[0-9]{1,20}", text) or not low <= int(text) <= high:
            raise ApiError(400, f"{name} must be a whole number from {low} to {high}, got {text[:40]!r}")
        return int(text)
    if field.type == F.TYPE_ENUM:
        names = enum_names(field.enum_type)
        key = text.lower().removeprefix(enum_prefix(field.enum_type).lower())
        if key not in names:
            raise ApiError(400, f"{name}: unknown value {text[:40]!r}; choose from {', '.join(names)}")
        return names[key]
    return text  # string


def parse(query, message, exclude: tuple[str, ...] = ()):
    """Fill `message` (a protobuf message) from `query` (a multidict of the URL's parameters)."""
    known = {f.name: f for f in fields(message.DESCRIPTOR, exclude)}
    for name in query:
        if name not in known:
            allowed = ", ".join(known) or "none"
            raise ApiError(400, f"unknown query parameter {name[:40]!r}; this path takes: {allowed}")
    for name in dict.fromkeys(query):  # each name once, in order
        field, values = known[name], query.getall(name)
        if field.is_repeated:
            items = [item for value in values for item in value.split(",") if item.strip()]
            getattr(message, name).extend(_value(field, item) for item in items)
        elif len(values) > 1:
            raise ApiError(400, f"{name} is given {len(values)} times; give it once")
        else:
            setattr(message, name, _value(field, values[0]))
    return message


def schema(field: FieldDescriptor) -> dict:
    """The JSON Schema of a parameter as `parse` reads it (for the OpenAPI document)."""
    if field.type == F.TYPE_BOOL:
        item = {"type": "boolean"}
    elif field.type in NUMBERS:
        item = {"type": "number"}
    elif field.type in INTEGERS:
        low, high = INTEGERS[field.type]
        item = {"type": "integer", "minimum": low, "maximum": high}
    elif field.type == F.TYPE_ENUM:
        item = {"type": "string", "enum": list(enum_names(field.enum_type))}
    else:
        item = {"type": "string"}
    return {"type": "array", "items": item} if field.is_repeated else item

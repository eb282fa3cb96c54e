"""Protobuf message descriptors -> JSON Schema (2020-12, the dialect of OpenAPI 3.1).

The schemas describe protobuf's JSON mapping as `faceanalysis.runtime.results.to_json` prints
it (`preserving_proto_field_name`, `always_print_fields_with_no_presence`), walked from the
faceanalysis.v1 descriptors, so they cannot drift from the protos:

- field names as in the proto; a field without presence (scalars, enums, repeated fields, maps)
  is always printed, so it is `required`; message fields and oneof members only when set;
- enums as their value names; maps as objects; repeated fields as arrays;
- 64-bit integers as decimal strings, bytes as base64 strings;
- google.protobuf.Timestamp as an RFC 3339 date-time string, the other well-known types as
  their own JSON forms.

Floats are plain numbers here: the mapping would print NaN and infinities as strings, and no
result of this API holds one.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

F = FieldDescriptor
INT64 = {"type": "string", "pattern": "^-?[0-9]+$", "format": "int64"}
UINT64 = {"type": "string", "pattern": "^[0-9]+$", "format": "uint64"}
SCALARS = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    F.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    F.TYPE_INT64: INT64, F.TYPE_SINT64: INT64, F.TYPE_SFIXED64: INT64,
    F.TYPE_UINT64: UINT64, F.TYPE_FIXED64: UINT64,
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WRAPPED = {"Double": F.TYPE_DOUBLE, "Float": F.TYPE_FLOAT, "Int64": F.TYPE_INT64, "UInt64": F.TYPE_UINT64,
            "Int32": F.TYPE_INT32, "UInt32": F.TYPE_UINT32, "Bool": F.TYPE_BOOL, "String": F.TYPE_STRING,
            "Bytes": F.TYPE_BYTES}
WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object", "maxProperties": 0},
    "google.protobuf.Any": {"type": "object", "required": ["@type"], "properties": {"@type": {"type": "string"}}},
    **{f"google.protobuf.{name}Value": SCALARS[kind] for name, kind in _WRAPPED.items()},
}


class SchemaSet:
    """The named schemas (OpenAPI `components.schemas`) of the messages and enums referenced so far."""

    def __init__(self, prefix: str = "#/components/schemas/"):
        self.prefix = prefix
        self.schemas: dict[str, dict] = {}
        self._owners: dict[str, str] = {}  # schema name -> full protobuf name

    def _name(self, descriptor: Descriptor | EnumDescriptor) -> str:
        """The short name (AnalysisResult), or the full one where two packages share a short name."""
        name = descriptor.name
        owner = self._owners.setdefault(name, descriptor.full_name)
        return name if owner == descriptor.full_name else descriptor.full_name

    def ref(self, descriptor: Descriptor) -> dict:
        """A schema for a message: a reference to its named schema (added with all it uses), or a
        well-known type's JSON form inline."""
        if descriptor.full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[descriptor.full_name])
        name = self._name(descriptor)
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: a message may (indirectly) hold itself
            self.schemas[name] = self._message(descriptor)
        return {"$ref": self.prefix + name}

    def enum_ref(self, enum: EnumDescriptor) -> dict:
        name = self._name(enum)
        self.schemas.setdefault(name, {"type": "string", "enum": [value.name for value in enum.values],
                                       "description": f"{enum.full_name}, by value name"})
        return {"$ref": self.prefix + name}

    def _message(self, descriptor: Descriptor) -> dict:
        schema: dict = {"type": "object", "description": descriptor.full_name,
                        "properties": {f.name: self._field(f) for f in descriptor.fields}}
        required = [f.name for f in descriptor.fields if not f.has_presence]
        if required:
            schema["required"] = required
        return schema

    def _field(self, field: FieldDescriptor) -> dict:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            # JSON object keys are strings whatever the map's key type.
            return {"type": "object", "additionalProperties": self._single(entry.fields_by_name["value"])}
        if field.is_repeated:
            return {"type": "array", "items": self._single(field)}
        return self._single(field)

    def _single(self, field: FieldDescriptor) -> dict:
        if field.type == F.TYPE_MESSAGE:
            return self.ref(field.message_type)
        if field.type == F.TYPE_ENUM:
            return self.enum_ref(field.enum_type)
        if field.type not in SCALARS:
            raise ValueError(f"{field.full_name}: no JSON mapping for field type {field.type}")
        return dict(SCALARS[field.type])

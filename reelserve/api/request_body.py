"""Reading a request body into a schema, whatever a client sends.

JSON is validated strictly, by pydantic's own parser: a number sent as a string is refused, not
coerced; ``Infinity``/``NaN``, integers too long to parse and nesting deeper than the parser's limit
are refused as invalid JSON. A form carries text only, so its fields are parsed as text (a form is
how a browser sends a number); its nested fields (``cache``, ``loras``) travel as JSON text and are held
to the JSON rules.
No input reaches the handlers unparsed, so none can end in a 500.
"""

from __future__ import annotations

import functools
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

from fastapi import Request
from pydantic import BaseModel, TypeAdapter, ValidationError

from reelserve.api.errors import validation_error
from reelserve.schemas import ErrorCode, ReelserveError

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
Model = TypeVar("Model", bound=BaseModel)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def looks_like_json(request: Request) -> bool:
    """``curl -d '{...}'`` without ``-H 'content-type: application/json'`` labels JSON as a form; a form
    body never starts with ``{``, so such a body is read as the JSON it is."""
    return (await request.body()).lstrip()[:1] == b"{"


async def parse_json_body(request: Request, model: type[Model]) -> Model:
    """The body as ``model``; 400 ``invalid_request`` naming ``body`` when it is not one JSON object,
    422 naming the field when a field is wrong."""
    return parse_json_text(await request.body(), model, param="body")


def parse_json_text(text: bytes | str, model: type[Model], param: str) -> Model:
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise _json_error(exc, param) from None


async def parse_form_body(request: Request, model: type[Model], json_fields: tuple[str, ...] = ()) -> Model:
    """A form's text fields as ``model`` (lax: form values are text); ``json_fields`` hold JSON text,
    each parsed as that field's own model. A file part is refused: no field takes one."""
    parsed, _ = await parse_form_with_files(request, model, json_fields)
    return parsed


async def parse_form_with_files(request: Request, model: type[Model], json_fields: tuple[str, ...] = (),
                                file_fields: tuple[str, ...] = ()) -> tuple[Model, dict[str, bytes]]:
    """``parse_form_body``, and the bytes of the ``file_fields`` sent as files (each at most once; a
    file part in any other field is refused). A file field sent as text stays a model field (a data URL)."""
    form = await request.form()
    data: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for name, value in form.multi_items():
        if isinstance(value, str):
            data[name] = value
            continue
        if name not in file_fields:
            raise ReelserveError(
                ErrorCode.invalid_parameter, f"{name}: files are not accepted; send the value as text", param=name
            )
        if name in files:
            raise ReelserveError(ErrorCode.invalid_parameter, f"{name}: one file at most", param=name)
        files[name] = await value.read()
    for name in json_fields:
        if name in data:
            data[name] = _json_field(data[name], name, model)
    try:
        return model.model_validate(data), files
    except ValidationError as exc:
        raise validation_error(exc) from None


def _json_field(text: str, name: str, model: type[BaseModel]) -> Any:
    adapter, shape = _json_field_type(model, name)
    try:
        return adapter.validate_json(text, strict=True)
    except ValidationError as exc:
        error = validation_error(exc)
        if error.param is None or error.param == "body":
            raise ReelserveError(
                ErrorCode.invalid_parameter, f"{name}: must be {shape} ({error.message})", param=name
            ) from None
        inner = f"{name}.{error.param}"
        raise ReelserveError(
            ErrorCode.invalid_parameter, error.message.replace(f"{error.param}:", f"{inner}:", 1), param=inner
        ) from None


@functools.cache
def _json_field_type(model: type[BaseModel], name: str) -> tuple[TypeAdapter[Any], str]:
    """What a form's JSON text field holds: a nested model (a JSON object) or a list of them (a JSON list),
    the field's annotation less its ``None``."""
    annotation = model.model_fields[name].annotation
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    for member in members:
        if is_model(member):
            return TypeAdapter(member), "a JSON object"
        if get_origin(member) is list and all(is_model(item) for item in get_args(member)):
            return TypeAdapter(member), "a JSON list of objects"
    raise TypeError(f"{model.__name__}.{name} is neither a model field nor a list of models")


def is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _json_error(exc: ValidationError, param: str) -> ReelserveError:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return ReelserveError(ErrorCode.invalid_request, f"{param}: {first.get('msg')}", param=param)
    if first.get("type") == "model_type" and not first.get("loc"):
        return ReelserveError(ErrorCode.invalid_request, f"{param} must be a JSON object", param=param)
    return validation_error(exc)

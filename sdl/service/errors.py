"""Errors the service turns into HTTP answers (each with a JSON body saying what is wrong)."""

from __future__ import annotations

from sdl.errors import SdlError


class ServiceError(SdlError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"

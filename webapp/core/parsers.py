"""The API's JSON parser: DRF's, refusing a body over `DATA_UPLOAD_MAX_MEMORY_SIZE` unread.

DRF reads a JSON body from the request stream, past the check Django makes of that setting
for `request.body` and forms. (Named in the settings' REST_FRAMEWORK, which DRF reads while
`webapp.core.errors` imports it: the error is imported when needed.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _
from rest_framework import parsers


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        request = (parser_context or {}).get("request")
        limit = int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0)
        if request is not None and limit:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                from webapp.core.errors import TooLarge

                raise TooLarge(_("the body has {size} bytes; a JSON body has at most {max} "
                                 "bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)").format(
                                     size=length, max=limit), code="body_too_large")
        return super().parse(stream, media_type, parser_context)

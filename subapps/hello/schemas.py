"""The hello API's declared types."""

from typing import Annotated

import msgspec
from msgspec import Meta

from .app import MAX_NAME


class GreetingQuery(msgspec.Struct):
    # The length is checked by the handler, whose message says how long the name was.
    name: Annotated[str, Meta(extra_json_schema={"maxLength": MAX_NAME}, description="Who to greet", examples=["Ada"])] = "world"


class Greeting(msgspec.Struct):
    greeting: str

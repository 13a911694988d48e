"""The `{{ name }}` templates of the relay's files (package data under templates/)."""

import functools
import re
from importlib import resources

PLACEHOLDER = re.compile(r"\{\{ ([a-z0-9_]+) \}\}")


@functools.cache
def template(name):
    """The text of templates/`name` of this package."""
    return resources.files(__package__).joinpath("templates", name).read_text()


def substitute(text, values):
    """Replace every `{{ name }}`; a name without a value is a bug (KeyError)."""
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)

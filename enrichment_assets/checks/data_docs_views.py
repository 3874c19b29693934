"""The Jinja views our Data Docs pages are rendered with: GX's, with the data escaped.

A Data Docs page is a tree of content blocks that GX's views turn into HTML. GX's own
markup comes as templates and a few trusted parameters (the status icons); the data
come as plain strings (the cells of a table, such as the unexpected values) and as
template parameters. GX 1.x inserts the plain strings raw, so an id such as
`<img src=x onerror=...>` in a batch became live HTML in the report, and it escapes
only the parameters that are strings. These views escape both, whatever their type;
GX's templates and trusted parameters are left as GX made them.

Named in `gx_context._project_config` (`site_section_builders`, `site_index_builder`),
and imported by GX only when it builds the site: importing GX costs seconds.
"""

from __future__ import annotations

import html
from typing import Any

from great_expectations.render.components import RenderedComponentContent
from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import pass_context
from jinja2.bccache import Bucket, BytecodeCache

_NUMBERS = (bool, int, float)


def _is_block(value: Any) -> bool:
    return isinstance(value, RenderedComponentContent) or (
        isinstance(value, dict) and "content_block_type" in value
    )


def _text(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


class _CompiledTemplates(BytecodeCache):
    """GX's templates compiled once per process, whatever the view.

    GX builds a new view, and so a new Jinja environment, each time a site is built (once
    per gate): without this every page recompiled every template it uses, about 60 % of
    a Data Docs update. Jinja checks each template's source against its checksum.
    """

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_COMPILED_TEMPLATES = _CompiledTemplates()


class _EscapedData:
    """Escapes the data parts of a page; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.env.bytecode_cache = _COMPILED_TEMPLATES  # type: ignore[attr-defined]

    @pass_context
    def render_content_block(
        self,
        jinja_context: Any,
        content_block: Any,
        index: Any = None,
        content_block_id: Any = None,
        render_to_markdown: bool = False,
    ) -> Any:
        if content_block is None or isinstance(content_block, _NUMBERS):
            return "" if content_block is None else content_block
        if isinstance(content_block, list):
            content_block = [el if _is_block(el) else _text(el) for el in content_block]
        elif not _is_block(content_block):
            return _text(content_block)
        return super().render_content_block(  # type: ignore[misc]
            jinja_context, content_block, index, content_block_id, render_to_markdown
        )

    @staticmethod
    def _escape_template_param_value(value: Any) -> Any:
        if value is None or isinstance(value, _NUMBERS):
            return value
        return _text(value)


class EscapedPageView(_EscapedData, DefaultJinjaPageView):
    """Validation result and expectation suite pages."""


class EscapedIndexPageView(_EscapedData, DefaultJinjaIndexPageView):
    """The site's index page."""

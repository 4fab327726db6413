"""XML request bodies as the mapping sees them: the convention of XML answers, read back.

``<xml><From>u1</From><Msg id="7">hi</Msg></xml>`` becomes
``{"xml": {"From": "u1", "Msg": {"@id": "7", "#text": "hi"}}}``: an element with neither
attributes nor children is its text; one with them is an object, attributes as ``@name``, text
that is not only white space as ``#text``, children by name (a list where a name repeats).
CDATA is text.

Hostile documents are refused before they cost anything: no document type declaration (so no
entity, internal or external: no "billion laughs", no file or URL read), at most
``MAX_DEPTH`` levels and ``MAX_ELEMENTS`` elements, and the body's own size limit. Expat (the
standard library's parser) reads the document once and the object is built as it goes; with
declarations refused it does what defusedxml would here, without another dependency.
"""

from typing import Any, Dict, List, Optional, Tuple
from xml.parsers import expat

from generic_connector.errors import GenericConnectorError

MAX_DEPTH = 100
MAX_ELEMENTS = 10_000


class XMLRefused(GenericConnectorError, ValueError):
    """The body is not XML the channel reads; the message says why (no document data)."""


def read_xml(raw: bytes, encoding: Optional[str] = None) -> Dict[str, Any]:
    """The document's root element as ``{name: content}``; XMLRefused otherwise.

    ``encoding`` (``UTF-8`` for text already decoded, as ``parse_xml()`` gives) overrides the
    one the document declares."""
    parser = expat.ParserCreate(encoding)  # no namespace processing: names as written
    stack: List[Tuple[str, Dict[str, Any], List[str]]] = []  # (name, object, text parts)
    root: Dict[str, Any] = {}
    count = 0

    def start(name: str, attributes: Dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > MAX_ELEMENTS:
            raise XMLRefused(f"the document has more than {MAX_ELEMENTS} elements")
        if len(stack) >= MAX_DEPTH:
            raise XMLRefused(f"the document nests deeper than {MAX_DEPTH} levels")
        stack.append((name, {f"@{k}": v for k, v in attributes.items()}, []))

    def end(name: str) -> None:
        _, content, texts = stack.pop()
        text = "".join(texts)
        value: Any
        if content:
            if text.strip():
                content["#text"] = text
            value = content
        else:
            value = text
        parent = stack[-1][1] if stack else root
        if name in parent and not name.startswith("@"):
            earlier = parent[name]
            parent[name] = earlier + [value] if isinstance(earlier, list) else [earlier, value]
        else:
            parent[name] = value

    def text(data: str) -> None:
        if stack:
            stack[-1][2].append(data)

    def refuse_declaration(*_: Any) -> int:
        raise XMLRefused("document type declarations (and so entities) are not accepted")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = refuse_declaration
    parser.EntityDeclHandler = refuse_declaration
    parser.ExternalEntityRefHandler = refuse_declaration
    try:
        parser.Parse(raw, True)
    except expat.ExpatError as error:
        raise XMLRefused(
            f"not well-formed XML (line {error.lineno}, column {error.offset}): "
            f"{expat.ErrorString(error.code)}"
        ) from None
    if not root:
        raise XMLRefused("the document has no element")
    return root


def media_type_is_xml(media_type: Optional[str]) -> bool:
    media_type = media_type or ""
    return media_type in ("application/xml", "text/xml") or media_type.endswith("+xml")

"""Request data in XML answers: whatever it holds, the answer is well-formed XML that reads back
as the data was, or the template's answer is refused (RenderError), never ill-formed or with
markup the data chose.

Expected documents are written out by hand; every answer is also read back with ElementTree.
"""

import functools
import xml.etree.ElementTree as ET
from typing import Any, Dict

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from generic_connector.answers import MAX_XML_DEPTH, RenderError, ResponseTemplate, to_xml

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def answer(request: Dict[str, Any], body: str = "{Response: {Message: request.m}}") -> bytes:
    """The XML answer of a template over request data, as sent."""
    return template(body).render([], request, "s").body


@functools.lru_cache(maxsize=None)
def template(body: str) -> ResponseTemplate:
    return ResponseTemplate(body=body, content_type="application/xml")


# --- Names from data -----------------------------------------------------------------------


def test_an_attribute_key_cannot_add_attributes() -> None:
    # Before: <Message a="1" onclick="x" b="2"> (an attribute the data chose).
    with pytest.raises(RenderError) as raised:
        answer({"m": {'@a="1" onclick="x" b': "2"}})
    assert str(raised.value) == '\'a="1" onclick="x" b\' is not a valid XML attribute name'


@pytest.mark.parametrize(
    "key, shown",
    [
        ("a><Redirect>https://evil.example</Redirect><b", "'a><Redirect>https://evil.examp"),
        ("a b", "'a b'"),
        ("a\n", "'a\\n'"),  # `$` matched before a final newline
        ("1a", "'1a'"),
        ("-a", "'-a'"),
        ("a:b", "'a:b'"),  # a namespace prefix no one declared
        ("", "''"),
        ("@", "''"),  # an attribute without a name
        ("café", "'café'"),  # non-ASCII names: not every parser reads them alike
        ("a\x00", "'a\\x00'"),
    ],
)
def test_a_key_that_is_not_an_xml_name_is_refused(key: str, shown: str) -> None:
    with pytest.raises(RenderError) as raised:
        answer({"m": {key: "x"}})
    assert str(raised.value).startswith(shown)
    assert str(raised.value).endswith(
        ("is not a valid XML element name", "is not a valid XML attribute name")
    )


def test_a_long_name_is_cut_short_in_the_message() -> None:
    with pytest.raises(RenderError) as raised:
        answer({"m": {"<" * 1000: "x"}})
    assert str(raised.value) == f"'{'<' * 60}…' is not a valid XML element name"


def test_xmlns_cannot_be_bound_to_a_reserved_namespace() -> None:
    with pytest.raises(RenderError, match="xmlns cannot be http://www.w3.org/2000/xmlns/"):
        answer({"m": {"@xmlns": "http://www.w3.org/2000/xmlns/"}})
    assert answer({"m": {"@xmlns": "urn:x"}}) == (
        DECLARATION.encode() + b'<Response><Message xmlns="urn:x"></Message></Response>'
    )


# --- Text and attribute values ---------------------------------------------------------------


def test_markup_in_text_and_attributes_is_escaped() -> None:
    body = answer({"m": {"@v": "\"'<&>\t\n\r", "#text": "</Message><Redirect/>]]>&amp;\r\n"}})
    expected = (
        DECLARATION + '<Response><Message v="&quot;\'&lt;&amp;&gt;&#9;&#10;&#13;">'
        "&lt;/Message&gt;&lt;Redirect/&gt;]]&gt;&amp;amp;&#13;\n</Message></Response>"
    )
    assert body == expected.encode()
    message = ET.fromstring(body).find("Message")
    assert message is not None and list(message) == []
    assert message.get("v") == "\"'<&>\t\n\r"
    assert message.text == "</Message><Redirect/>]]>&amp;\r\n"


def test_characters_xml_cannot_hold_become_the_replacement_character() -> None:
    text = "a\x00b\x08c\x0bd\x1fe\ufffef\uffffg\ud800h\udfffi"
    body = answer({"m": {"@v": text, "#text": text}})
    replaced = "a\ufffdb\ufffdc\ufffdd\ufffde\ufffdf\ufffdg\ufffdh\ufffdi"
    expected = f'{DECLARATION}<Response><Message v="{replaced}">{replaced}</Message></Response>'
    assert body == expected.encode()
    message = ET.fromstring(body).find("Message")
    assert message is not None and (message.get("v"), message.text) == (replaced, replaced)


def test_characters_xml_allows_are_kept() -> None:
    text = "\t\x7f\x85\ud7ff\ue000\ufffd\U00010000\U0010ffff😀"
    message = ET.fromstring(answer({"m": {"Body": text}})).find("Message/Body")
    assert message is not None and message.text == text


# --- Shapes that would give no document, or too deep a one -----------------------------------


def test_the_root_is_one_element() -> None:
    with pytest.raises(RenderError, match="the XML root 'Response' must be one element, not a"):
        to_xml({"Response": [{"a": 1}, {"a": 2}]})  # before: two roots
    assert to_xml({"Response": None}) == DECLARATION + "<Response></Response>"  # before: none


def test_nesting_deeper_than_the_limit_is_refused_not_a_recursion_error() -> None:
    deep: Any = "x"
    for _ in range(900):
        deep = {"a": deep}
    with pytest.raises(RenderError, match=f"nests deeper than {MAX_XML_DEPTH} levels"):
        answer({"m": deep})
    lists: Any = "x"
    for _ in range(900):
        lists = [lists]
    with pytest.raises(RenderError, match=f"nests deeper than {MAX_XML_DEPTH} levels"):
        answer({"m": lists})
    shallow: Any = "x"
    for _ in range(MAX_XML_DEPTH - 1):
        shallow = {"a": shallow}
    assert ET.fromstring(answer({"m": shallow})).findtext("Message" + "/a" * 99) == "x"


# --- A string result is sent only if it is a well-formed document ----------------------------


def test_a_string_answer_must_be_well_formed_xml() -> None:
    body = "request.raw"
    assert answer({"raw": "<Response/>"}, body) == b"<Response/>"
    for raw in ("<Response>", "<a/><b/>", "", "a & b", "<a>\x00</a>", "<a>\ud800</a>"):
        with pytest.raises(RenderError, match="the XML answer is a string"):
            answer({"raw": raw}, body)


def test_a_string_answer_with_a_doctype_is_refused_before_its_entities_expand() -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
        + "]><r>&j;</r>"
    )
    with pytest.raises(RenderError, match="a DOCTYPE, which answers may not hold"):
        answer({"raw": laughs}, "request.raw")


# --- Any data: well-formed, and text reads back --------------------------------------------

# The target phase (Pareto optimisation) would take most of the run's time.
NO_TARGETING = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)
# The profile's count (tests/conftest.py): 100 in CI, so 200 and 400 documents below; a tenth
# of that in the inner loop.
EXAMPLES = settings().max_examples
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9._-]{0,6}", fullmatch=True)
ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=20)  # surrogates too
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT
KEYS = NAMES | ANY_TEXT | NAMES.map(lambda n: "@" + n) | ANY_TEXT.map(lambda t: "@" + t)
VALUES = st.recursive(
    SCALARS | st.just("#text"),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(KEYS | st.just("#text"), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=2 * EXAMPLES, deadline=None, phases=NO_TARGETING)
@given(st.dictionaries(KEYS, VALUES, max_size=4))
def test_any_data_gives_well_formed_xml_or_a_render_error(content: Dict[str, Any]) -> None:
    try:
        body = answer({"m": content})
    except RenderError as error:
        assert "not a valid XML" in str(error) or str(error).startswith("xmlns cannot be")
        return
    assert ET.fromstring(body).tag == "Response"


def xml_char(c: str) -> bool:
    """XML 1.0's Char production (section 2.2), written out."""
    n = ord(c)
    return n in (0x9, 0xA, 0xD) or 0x20 <= n <= 0xD7FF or 0xE000 <= n <= 0xFFFD or n >= 0x10000


@settings(max_examples=4 * EXAMPLES, deadline=None, phases=NO_TARGETING)
@given(ANY_TEXT, ANY_TEXT, NAMES, NAMES.filter(lambda name: name != "xmlns"))
def test_text_and_attributes_read_back(text: str, value: str, element: str, attr: str) -> None:
    message = ET.fromstring(answer({"m": {f"@{attr}": value, element: text}})).find("Message")
    assert message is not None
    kept = "".join(c if xml_char(c) else "\ufffd" for c in text)
    assert message.get(attr) == "".join(c if xml_char(c) else "\ufffd" for c in value)
    assert message.findtext(element) == kept

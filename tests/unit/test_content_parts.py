"""How a chat message's content reaches providers that take text and images only (Anthropic, Gemini): one
reading (gateway/fields.py content_parts), each adapter writing it in its own wire format."""

import pytest

from gateway.errors import GatewayError
from gateway.fields import content_parts, data_url
from gateway.providers.anthropic import _blocks
from gateway.providers.gemini import _parts

PNG = "data:image/png;base64,iVBORw0KGgo="
CONTENT = [
    {"type": "text", "text": "look"},
    {"type": "text", "text": ""},  # nothing to send
    {"type": "refusal", "refusal": "I can't help with that"},  # an assistant turn's words
    {"type": "image_url", "image_url": {"url": PNG}},
    {"type": "image_url", "image_url": "https://example.com/cat.jpg"},  # a bare string, as some clients send
]


def test_text_refusals_and_images_are_read_in_order():
    assert list(content_parts(CONTENT, "anthropic")) == [
        ("text", "look"),
        ("text", "I can't help with that"),
        ("image", PNG),
        ("image", "https://example.com/cat.jpg"),
    ]
    assert list(content_parts("hello", "gemini")) == [("text", "hello")]
    assert list(content_parts("", "gemini")) == []


def test_each_adapter_writes_them_in_its_own_format():
    assert _blocks(CONTENT) == [
        {"type": "text", "text": "look"},
        {"type": "text", "text": "I can't help with that"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    assert _parts(CONTENT) == [
        {"text": "look"},
        {"text": "I can't help with that"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"fileUri": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    "part, named",
    [
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "'input_audio'"),
        ({"type": "file", "file": {"file_id": "file-1"}}, "'file'"),
        ("just a string", "'str'"),
    ],
)
@pytest.mark.parametrize("translate, provider", [(_blocks, "anthropic"), (_parts, "gemini")])
def test_a_part_a_provider_cannot_take_is_refused_not_dropped(translate, provider, part, named):
    with pytest.raises(GatewayError) as refused:
        translate([{"type": "text", "text": "before"}, part])
    error = refused.value
    assert (error.status, error.code, error.param) == (400, "unsupported_content", "messages")
    assert named in str(error) and provider in str(error)


def test_data_urls():
    assert data_url(PNG) == ("image/png", "iVBORw0KGgo=")
    assert data_url("https://example.com/cat.jpg") is None

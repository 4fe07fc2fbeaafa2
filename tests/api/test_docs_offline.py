"""`/docs` and `/redoc` work without a network: every script, style sheet and icon their pages name is
served by the service itself (from an installed package), none from a CDN."""

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest


class _Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.urls.append(attrs["src"])
        elif tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])


@pytest.mark.parametrize("page, expected", [("/docs", "swagger-ui"), ("/redoc", "redoc")])
def test_every_asset_the_docs_page_names_is_served_here(api, page, expected):
    response = api.get(page)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    parser = _Assets()
    parser.feed(response.text)
    assert any(expected in url for url in parser.urls), parser.urls
    assert len(parser.urls) >= 2  # the script and a style sheet or icon at least

    for url in parser.urls:
        absolute = urljoin(api.url + page, url)
        assert urlsplit(absolute).netloc == urlsplit(api.url).netloc, f"{page} loads {url} from elsewhere"
        asset = api.get(absolute[len(api.url):])
        assert asset.status_code == 200 and asset.content, (url, asset.status_code)
    assert "cdn." not in response.text and "fonts.googleapis" not in response.text

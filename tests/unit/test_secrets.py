"""Keys out of text in every form they take there, and the keys' file written whole or not at all."""

import json
import os
import stat
from urllib.parse import quote

import pytest

from workbench.errors import StorageError
from workbench.providers.secrets import Redactor, mask_key
from workbench.providers.store import ProviderConfig, ProviderStore

AWKWARD = ["sk-new\nline-0123456789", "sk-quo\"te'-0123456789", "sk-back\\slash-0123456789",
           "sk-uni\u00e9\u4e2d-0123456789", "sk-per%cent+plus 0123456789"]


@pytest.mark.parametrize("key", AWKWARD)
def test_every_form_of_a_key_is_masked(key):
    redactor = Redactor()
    redactor.add(key)
    texts = [key, json.dumps({"m": key}), json.dumps(json.dumps({"m": key})), repr(key), repr([key + "'\""]),
             repr(Exception(key)), quote(key), quote(key, safe=""), str(key.encode()),
             json.dumps({"m": key}, ensure_ascii=False)]
    for text in texts:
        clean = redactor(text)
        assert key[:-3] not in clean and key[5:-3] not in clean, (text, clean)


def test_a_mask_shows_only_plain_characters():
    assert mask_key("sk-planted-secret-0123456789") == "...789"
    assert mask_key('sk-planted-secret-01234567"\\') == "***"  # the mask may go anywhere unescaped
    assert mask_key("short") == "***" and mask_key(None) is None


def test_a_failed_write_changes_neither_the_file_nor_the_configuration(tmp_path, monkeypatch):
    path = tmp_path / "providers.json"
    store = ProviderStore(path)
    store.configure(ProviderConfig(provider="ollama", api_base="http://127.0.0.1:11"))
    before = path.read_bytes()

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # what a full disk answers when the data is flushed
    with pytest.raises(StorageError, match="No space left") as caught:
        store.configure(ProviderConfig(provider="openai", api_key="sk-0123456789abcdef"))
    assert caught.value.full
    assert path.read_bytes() == before and "openai" not in store.configs
    assert [p.name for p in tmp_path.iterdir()] == ["providers.json"]  # no temporary file left
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_keys_file_left_readable_is_made_owner_only(tmp_path):
    path = tmp_path / "providers.json"
    path.write_text(json.dumps({"providers": {}, "fallback": None}))
    os.chmod(path, 0o644)
    ProviderStore(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

"""`/v1/models` lists every name a request can use, trained experiments and fused models included, and
`/v1/models/{id}` answers one of them (ids may hold `/`) or OpenAI's 404."""

import shutil

import openai

from tests.api.conftest import MODEL, start, wait_for

HI = [{"role": "user", "content": "What colour is grass?"}]


def client(api):
    return openai.OpenAI(base_url=api.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_trained_and_fused_models_are_listed_retrieved_and_served(api):
    start(api, experiment_name="listed", max_steps=2)
    wait_for(api, "listed", until={"completed"})
    fused = api.post("/train/listed/fuse").json()["path"]

    listed = {m.id: m for m in client(api).models.list().data}
    assert {"tiny", MODEL, "listed", fused, "auto"} <= set(listed)
    assert (listed["listed"].kind, listed["listed"].parent, listed["listed"].created > 0) == ("experiment", MODEL, True)
    assert (listed[fused].kind, listed[fused].parent) == ("fused", "listed")
    assert (listed[MODEL].kind, listed[MODEL].parent) == ("alias", "tiny")
    for name in ("listed", fused, MODEL):
        one = client(api).models.retrieve(name)  # the client percent-encodes the '/' of an id
        assert (one.id, one.object, one.owned_by) == (name, "model", "workbench")
        reply = client(api).chat.completions.create(model=name, messages=HI, max_tokens=4, temperature=0)
        assert reply.model == name and reply.choices[0].message.content
    with api.client() as library:  # the library's client mirrors Workbench.served_models
        assert [m.id for m in library.served_models().data] == list(listed)
        assert library.served_model(fused).kind == "fused"

    # An experiment whose adapter folder is gone serves nothing: it leaves the list, its fused model stays.
    shutil.rmtree(api.get("/train/listed/status").json()["adapter_path"])
    ids = [m.id for m in client(api).models.list().data]
    assert "listed" not in ids and fused in ids


def test_a_folder_not_listed_is_retrieved_and_a_name_that_resolves_nowhere_is_a_404(api, models_dir):
    folder = f"{models_dir}/tiny"
    assert client(api).models.retrieve(folder).kind == "folder"
    response = api.get("/v1/models/nobody/none")
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "model" and "nobody/none" in response.json()["error"]["message"]

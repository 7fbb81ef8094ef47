"""Products in the console: a new product with its thing model, the thing-model editor's page,
export and import; the data scope, permissions and hostile models."""

from __future__ import annotations

import io
import json

import pytest

from tests.console.conftest import OPERATOR_PERMISSIONS
from webapp.products.models import Product, ProductTemplate

pytestmark = pytest.mark.django_db

EDITOR = (*OPERATOR_PERMISSIONS, "products.add_product", "products.change_product")

MODEL = [{
    "code": "env", "name": "Environment",
    "properties": [
        {"code": "temperature", "name": "Temperature", "datatype": "int", "min": -40,
         "max": 125, "step": 1, "unit": "C", "access": "RE"},
        {"code": "mode", "name": "Mode", "datatype": "enum", "enum_values": ["eco", "boost"],
         "access": "RW"},
    ],
    "commands": [{"code": "reboot", "name": "Reboot",
                  "requests": [{"code": "delay", "datatype": "int", "min": 0, "max": 60}],
                  "responses": [{"code": "ok", "datatype": "bool"}]}],
    "events": [{"code": "overheat", "params": [{"code": "level", "datatype": "decimal"}]}],
}]


@pytest.fixture
def editor(world):
    """An operator of department A who may add and change products."""
    return world.org.user("editor", world.org.a, EDITOR, scope="department")


def text(response) -> str:
    return response.content.decode()


def new_product(client, model, **fields):
    data = {"identifier": "new-p", "name": "New P", "product_type": "common",
            "protocol": "mqtt", "data_format": "json", "description": "",
            "model": json.dumps(model), "action": "save", **fields}
    return client.post("/products/new/", data)


def test_the_new_product_page_offers_scope_departments_and_templates(world, editor, client_of):
    page = client_of(editor).get("/products/new/")
    assert page.status_code == 200
    body = text(page)
    assert f'<option value="{world.org.a.pk}" selected>' in body
    assert f'value="{world.org.b.pk}"' not in body
    assert 'id="tm-config"' in body and "thingmodel.js" in body
    # the protocols the model has
    for protocol in ("mqtt", "websocket", "coap", "http", "tcp", "udp"):
        assert f'value="{protocol}"' in body


def test_a_valid_product_is_created_with_its_model(world, editor, client_of):
    response = new_product(client_of(editor), MODEL)
    assert response.status_code == 302, text(response)
    assert response["Location"] == "/products/new-p/"
    product = Product.objects.get(identifier="new-p")
    assert product.department == world.org.a and product.created_by == editor
    service = product.services.get()
    assert [p.code for p in service.properties.all()] == ["temperature", "mode"]
    temperature = service.properties.get(code="temperature")
    assert (temperature.min, temperature.max, temperature.unit) == (-40, 125, "C")
    assert service.properties.get(code="mode").enum_values == ["eco", "boost"]
    command = service.commands.get()
    assert [(p.code, p.direction) for p in command.parameters.all()] == [
        ("delay", "request"), ("ok", "response")]
    assert service.events.get().parameters.get().code == "level"
    page = text(client_of(editor).get("/products/new-p/"))
    assert "temperature" in page and "overheat" in page


def test_an_invalid_model_is_refused_with_reasons_by_path(world, editor, client_of):
    bad = json.loads(json.dumps(MODEL))
    bad[0]["properties"][0]["min"] = 200  # min > max
    bad[0]["properties"][1]["enum_values"] = []
    bad[0]["properties"].append({"code": "9bad", "datatype": "int"})
    bad[0]["properties"].append({"code": "TEMPERATURE", "datatype": "int"})
    bad[0]["properties"].append({"code": "ts", "datatype": "int"})
    response = new_product(client_of(editor), bad)
    assert response.status_code == 400
    errors = response.context["model_errors"]
    assert "min is greater than max" in errors["services.0.properties.0.min"][0]
    assert "an enum needs its values" in errors["services.0.properties.1.enum_values"][0]
    assert "services.0.properties.2.code" in errors
    assert "ts is a reserved name" in errors["services.0.properties.4.code"][0]
    assert not Product.objects.filter(identifier="new-p").exists()
    # the reasons are on the page, and the model typed is kept for the editor
    body = text(response)
    assert "min is greater than max" in body
    assert '"9bad"' in body or "9bad" in body


def test_empty_and_repeated_enum_values_are_refused_by_the_server_too(world, editor,
                                                                      client_of):
    bad = json.loads(json.dumps(MODEL))
    bad[0]["properties"][1]["enum_values"] = ["eco", "", "eco"]
    response = new_product(client_of(editor), bad)
    assert response.status_code == 400
    reasons = response.context["model_errors"]["services.0.properties.1.enum_values"]
    assert reasons == ["an enum value is empty"]
    assert not Product.objects.filter(identifier="new-p").exists()


def test_a_duplicate_identifier_is_shown_next_to_the_field(world, editor, client_of):
    response = new_product(client_of(editor), MODEL, identifier="thermo-b")
    assert response.status_code == 400
    assert "already exists" in " ".join(response.context["form"].errors["identifier"])


def test_another_departments_department_is_refused(world, editor, client_of):
    response = new_product(client_of(editor), MODEL, department=world.org.b.pk)
    assert response.status_code == 400
    assert "department" in response.context["form"].errors
    assert not Product.objects.filter(identifier="new-p").exists()


def test_a_template_fills_an_empty_model(world, editor, client_of):
    ProductTemplate.objects.create(identifier="tpl-a", name="Tpl A", department=world.org.a,
                                   services=MODEL)
    ProductTemplate.objects.create(identifier="tpl-b", name="Tpl B", department=world.org.b,
                                   services=MODEL)
    client = client_of(editor)
    body = text(client.get("/products/new/"))
    assert 'value="tpl-a"' in body and 'value="tpl-b"' not in body
    assert new_product(client, [], template="tpl-b").status_code == 400
    response = new_product(client, [], template="tpl-a")
    assert response.status_code == 302, text(response)
    product = Product.objects.get(identifier="new-p")
    assert product.services.get().properties.count() == 2


def test_permissions_are_required(world, client_of):
    # alice may view products but not add or change them; nobody has no permission
    for user in (world.alice, world.nobody):
        client = client_of(user)
        assert client.get("/products/new/").status_code == 403
        assert new_product(client, MODEL).status_code == 403
        assert client.get("/products/thermo-a/model/").status_code == 403
        assert client.post("/products/thermo-a/model/",
                           {"model": json.dumps(MODEL)}).status_code == 403
    assert not Product.objects.filter(identifier="new-p").exists()
    assert client_of(world.nobody).get("/products/thermo-a/export/").status_code == 403


def test_another_departments_product_is_not_found(world, editor, client_of):
    client = client_of(editor)
    assert client.get("/products/thermo-b/model/").status_code == 404
    assert client.post("/products/thermo-b/model/",
                       {"model": json.dumps(MODEL), "action": "save"}).status_code == 404
    assert client.get("/products/thermo-b/export/").status_code == 404
    # untouched: its model still has what it had
    assert world.product_b.services.get().properties.filter(code="target").exists()


def test_the_model_page_saves_through_the_actions(world, editor, client_of):
    client = client_of(editor)
    page = client.get("/products/thermo-a/model/")
    assert page.status_code == 200
    services = json.loads(page.context["model_json"])
    assert all("id" not in s for s in services)
    services[0]["properties"].append({"code": "pressure", "name": "Pressure",
                                      "datatype": "decimal", "min": 0, "max": 100,
                                      "unit": "%"})
    response = client.post("/products/thermo-a/model/", {"model": json.dumps(services),
                                                         "action": "save"})
    assert response.status_code == 302, text(response)
    assert world.product_a.services.get().properties.filter(code="pressure").exists()
    # the product page links the editor and the exports
    body = text(client.get("/products/thermo-a/"))
    assert 'href="/products/thermo-a/model/"' in body
    assert 'href="/products/thermo-a/export/?dialect=thinglinks"' in body


def test_removing_a_property_with_stored_data_is_refused_unless_migrated(world, editor,
                                                                         client_of,
                                                                         monkeypatch):
    from webapp.products import followers

    storage = followers.storage()
    monkeypatch.setattr(type(storage), "has_data", lambda self, *a, **k: True)
    client = client_of(editor)
    services = json.loads(client.get("/products/thermo-a/model/").context["model_json"])
    services[0]["properties"] = [p for p in services[0]["properties"]
                                 if p["code"] != "temperature"]
    data = {"model": json.dumps(services), "action": "save"}
    response = client.post("/products/thermo-a/model/", data)
    assert response.status_code == 409
    body = text(response)
    assert 'data-testid="model-refused"' in body and "temperature" in body
    assert 'name="migrate"' in body
    assert world.product_a.services.get().properties.filter(code="temperature").exists()
    response = client.post("/products/thermo-a/model/", {**data, "migrate": "1"})
    assert response.status_code == 302, text(response)
    assert not world.product_a.services.get().properties.filter(code="temperature").exists()


def test_export_in_both_forms_and_reimport_into_the_editor(world, editor, client_of):
    client = client_of(editor)
    ours = client.get("/products/thermo-a/export/")
    assert ours.status_code == 200
    assert 'filename="thermo-a.json"' in ours["Content-Disposition"]
    assert json.loads(ours.content)["services"][0]["code"] == "env"
    thinglinks = client.get("/products/thermo-a/export/?dialect=thinglinks")
    assert 'filename="thermo-a.thinglinks.json"' in thinglinks["Content-Disposition"]
    payload = json.loads(thinglinks.content)
    assert payload["productIdentification"] == "thermo-a"
    assert payload["services"][0]["serviceCode"] == "env"
    for content in (ours.content, thinglinks.content):
        upload = io.BytesIO(content)
        upload.name = "model.json"
        response = client.post("/products/thermo-a/model/", {
            "model": "[]", "action": "import", "import_file": upload})
        assert response.status_code == 200, response.context["model_errors"]
        imported = json.loads(response.context["model_json"])
        codes = [p["code"] for p in imported[0]["properties"]]
        assert codes == [p.code for p in world.product_a.services.get().properties.all()]
    # importing does not save
    assert world.product_a.services.count() == 1


def test_an_import_into_a_new_product_fills_its_empty_fields(world, editor, client_of):
    client = client_of(editor)
    upload = io.BytesIO(client.get("/products/thermo-a/export/?dialect=thinglinks").content)
    upload.name = "thermo.json"
    response = client.post("/products/new/", {"identifier": "", "name": "", "model": "[]",
                                              "action": "import", "import_file": upload})
    assert response.status_code == 200
    body = text(response)
    assert 'value="thermo-a"' in body  # the identifier came from the file
    assert json.loads(response.context["model_json"])[0]["code"] == "env"


@pytest.mark.parametrize("content, reason", [
    (b"{not json", "not JSON"),
    (b'"text"', "object"),
    (json.dumps({"productName": "X", "services": [{"serviceCode": "s", "properties": [
        {"propertyCode": "p", "datatype": "nonsense"}]}]}).encode(), "unknown datatype"),
])
def test_an_invalid_import_lists_its_errors(world, editor, client_of, content, reason):
    upload = io.BytesIO(content)
    upload.name = "bad.json"
    response = client_of(editor).post("/products/thermo-a/model/", {
        "model": json.dumps(MODEL), "action": "import", "import_file": upload})
    assert response.status_code == 400
    assert response.context["model_errors"]["import_file"]
    assert reason in json.dumps(response.context["model_errors"])
    assert 'data-field="import_file"' in text(response)
    # the model being edited stays in the editor
    assert json.loads(response.context["model_json"])[0]["events"][0]["code"] == "overheat"


def test_an_import_with_an_invalid_model_shows_it_with_its_problems(world, editor, client_of):
    bad = json.loads(json.dumps(MODEL))
    bad[0]["properties"][0]["max"] = -100
    upload = io.BytesIO(json.dumps({"identifier": "x", "services": bad}).encode())
    upload.name = "bad.json"
    response = client_of(editor).post("/products/thermo-a/model/", {
        "model": "[]", "action": "import", "import_file": upload})
    assert response.status_code == 400
    assert "services.0.properties.0.min" in response.context["model_errors"]
    assert json.loads(response.context["model_json"])[0]["properties"][0]["max"] == -100


def test_hostile_models_are_refused_or_rendered_safely(world, editor, client_of):
    client = client_of(editor)
    # huge JSON
    huge = json.dumps([{"code": "s", "description": "x" * (2 * 2**20)}])
    response = client.post("/products/thermo-a/model/", {"model": huge, "action": "save"})
    assert response.status_code == 400
    assert "larger than" in response.context["model_errors"]["model"][0]
    # 10,000 properties
    many = [{"code": "s", "properties": [{"code": f"p{i}", "datatype": "int"}
                                         for i in range(10_000)]}]
    response = new_product(client, many)
    assert response.status_code == 400
    assert "more than" in response.context["model_errors"]["model"][0]
    assert not Product.objects.filter(identifier="new-p").exists()
    # not JSON, not a list
    for model in ("{nope", '"text"', "42"):
        response = client.post("/products/thermo-a/model/", {"model": model, "action": "save"})
        assert response.status_code == 400
    # script in names: escaped in the page and in the editor's JSON
    script = "<script>alert(1)</script>"
    hostile = [{"code": "env", "name": script, "properties": [
        {"code": "x", "name": script, "datatype": "enum", "enum_values": [script],
         "description": script}]}]
    response = new_product(client, hostile, name=script)
    assert response.status_code == 302, text(response)
    for url in ("/products/new-p/", "/products/new-p/model/"):
        body = text(client.get(url))
        assert script not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body or "\\u003Cscript" in body
    # an invalid hostile model comes back escaped too
    hostile[0]["properties"][0]["code"] = script
    response = client.post("/products/new-p/model/", {"model": json.dumps(hostile),
                                                      "action": "save"})
    assert response.status_code == 400
    assert script not in text(response)

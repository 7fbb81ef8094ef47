"""In a browser: create a product and its thing model with the editor, see a wrong value
flagged as it is typed, save, see it on the product page, export it and import it back; in
English and in Simplified Chinese, with a screenshot of every step."""

from __future__ import annotations

import json

import pytest

from tests.console.browsing import new_page, set_language, shoot, sign_in
from tests.console.test_product_edit import EDITOR
from webapp.products.models import Product

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MIN_MAX = {"en": "min is greater than max", "zh-hans": ""}
HOSTILE = '<img src=x onerror="window.hacked=1">Meter'


def editor_input(page, path: str) -> str:
    return f'#tm-editor [data-path="{path}"]'


def error_of(page, path: str):
    return page.locator(f'#tm-editor [data-error-for="{path}"]')


def add(page, list_path: str, act: str) -> None:
    page.click(f'#tm-editor [data-list="{list_path}"] > [data-act="{act}"]')


@pytest.mark.parametrize("lang", ["en", "zh-hans"])
def test_create_a_product_with_the_editor_export_and_reimport(world, browser, live_server,
                                                               tmp_path, lang):
    world.org.user("maker", world.org.a, EDITOR, scope="department")
    identifier = f"meter-{lang}"
    page = new_page(browser)
    sign_in(page, live_server.url, "maker", start="/products/")
    set_language(page, lang)
    page.click('[data-testid="product-new"]')
    page.wait_for_url(f"{live_server.url}/products/new/")
    assert page.locator("#tm-editor").is_visible()
    assert not page.locator('[data-testid="model-readable"]').is_visible()
    shoot(page, "products-new")

    page.fill("#id_identifier", identifier)
    page.fill("#id_name", "Power meter <b>")
    page.select_option("#id_protocol", "http")
    page.click('#tm-editor [data-act="add-service"]')
    page.fill(editor_input(page, "services.0.code"), "meter")
    page.fill(editor_input(page, "services.0.name"), HOSTILE)

    # an integer property with a range and a unit; a wrong range is flagged as it is typed
    add(page, "services.0.properties", "add-property")
    page.fill(editor_input(page, "services.0.properties.0.code"), "voltage")
    page.fill(editor_input(page, "services.0.properties.0.name"), "Voltage")
    page.fill(editor_input(page, "services.0.properties.0.min"), "250")
    page.fill(editor_input(page, "services.0.properties.0.max"), "90")
    flagged = error_of(page, "services.0.properties.0.min")
    assert flagged.is_visible() and flagged.inner_text().strip()
    assert "invalid" in (page.locator(editor_input(page, "services.0.properties.0.min"))
                         .get_attribute("class") or "")
    if lang == "en":
        assert MIN_MAX["en"] in flagged.inner_text()
    # a code that is not a code is flagged too
    page.fill(editor_input(page, "services.0.properties.0.code"), "9volt")
    assert error_of(page, "services.0.properties.0.code").is_visible()
    assert page.locator('[data-testid="model-summary"]').is_visible()
    shoot(page, "products-editor-invalid")
    # saving is held back while the editor shows problems
    page.click('[data-testid="save-product"]')
    assert page.url == f"{live_server.url}/products/new/"
    page.fill(editor_input(page, "services.0.properties.0.code"), "voltage")
    page.fill(editor_input(page, "services.0.properties.0.min"), "90")
    page.fill(editor_input(page, "services.0.properties.0.max"), "250")
    page.fill(editor_input(page, "services.0.properties.0.unit"), "V")
    assert not error_of(page, "services.0.properties.0.min").is_visible()

    # an enum property
    add(page, "services.0.properties", "add-property")
    page.fill(editor_input(page, "services.0.properties.1.code"), "phase")
    page.select_option(editor_input(page, "services.0.properties.1.datatype"), "enum")
    assert error_of(page, "services.0.properties.1.enum_values").is_visible()
    page.click(f'{editor_input(page, "services.0.properties.1.enum_values")} '
               f'[data-act="add-value"]')
    page.fill(editor_input(page, "services.0.properties.1.enum_values.0"), "single")
    page.click(f'{editor_input(page, "services.0.properties.1.enum_values")} '
               f'[data-act="add-value"]')
    page.fill(editor_input(page, "services.0.properties.1.enum_values.1"), "three")
    page.select_option(editor_input(page, "services.0.properties.1.access"), "RW")

    # a command with a typed request parameter, and an event with a field
    add(page, "services.0.commands", "add-command")
    page.fill(editor_input(page, "services.0.commands.0.code"), "reset")
    add(page, "services.0.commands.0.requests", "add-request")
    page.fill(editor_input(page, "services.0.commands.0.requests.0.code"), "delay")
    page.fill(editor_input(page, "services.0.commands.0.requests.0.min"), "0")
    page.fill(editor_input(page, "services.0.commands.0.requests.0.max"), "60")
    add(page, "services.0.events", "add-event")
    page.fill(editor_input(page, "services.0.events.0.code"), "overload")
    add(page, "services.0.events.0.params", "add-event-field")
    page.fill(editor_input(page, "services.0.events.0.params.0.code"), "current")
    page.select_option(editor_input(page, "services.0.events.0.params.0.datatype"), "decimal")
    # reorder: the enum property first, then back
    page.click('#tm-editor [data-element="services.0.properties.1"] [data-act="up"]')
    assert page.input_value(editor_input(page, "services.0.properties.0.code")) == "phase"
    page.click('#tm-editor [data-element="services.0.properties.1"] [data-act="up"]')
    assert page.input_value(editor_input(page, "services.0.properties.0.code")) == "voltage"
    assert not page.locator('[data-testid="model-summary"]').is_visible()
    shoot(page, "products-editor-filled")

    with page.expect_navigation():
        page.click('[data-testid="save-product"]')
    assert page.url == f"{live_server.url}/products/{identifier}/"
    assert page.locator("main img").count() == 0
    assert HOSTILE in page.locator('[data-testid="service-meter"] h3').inner_text()
    product = Product.objects.get(identifier=identifier)
    assert product.protocol == "http" and product.department == world.org.a
    service = product.services.get()
    voltage = service.properties.get(code="voltage")
    assert (voltage.datatype, voltage.min, voltage.max, voltage.unit) == ("int", 90, 250, "V")
    phase = service.properties.get(code="phase")
    assert (phase.datatype, phase.enum_values, phase.access) == ("enum", ["single", "three"],
                                                                  "RW")
    request = service.commands.get(code="reset").parameters.get()
    assert (request.code, request.datatype, request.max) == ("delay", "int", 60)
    assert service.events.get(code="overload").parameters.get().datatype == "decimal"
    card = page.locator('[data-testid="service-meter"]')
    assert "voltage" in card.inner_text() and "90 … 250" in card.inner_text()
    assert "single, three" in card.inner_text() and "overload" in card.inner_text()
    assert "Power meter <b>" in page.locator("h1").inner_text()
    shoot(page, "products-detail")

    # export in both forms
    with page.expect_download() as ours:
        page.click('[data-testid="export-json"]')
    exported = json.loads(ours.value.path().read_text())
    assert exported["identifier"] == identifier
    with page.expect_download() as theirs:
        page.click('[data-testid="export-thinglinks"]')
    thinglinks_file = tmp_path / "meter.thinglinks.json"
    theirs.value.save_as(thinglinks_file)
    assert json.loads(thinglinks_file.read_text())["services"][0]["serviceCode"] == "meter"

    # edit: remove the event, then import the export back into the editor and save
    page.click('[data-testid="edit-model"]')
    page.wait_for_url(f"{live_server.url}/products/{identifier}/model/")
    page.click('#tm-editor [data-element="services.0.events.0"] > .tm-head [data-act="remove"]')
    assert page.locator(editor_input(page, "services.0.events.0.code")).count() == 0
    assert page.input_value(editor_input(page, "services.0.name")) == HOSTILE
    assert page.locator("#tm-editor img").count() == 0
    shoot(page, "products-model")
    page.set_input_files('[data-testid="import-file"]', str(thinglinks_file))
    with page.expect_navigation():
        page.click('[data-testid="import-button"]')
    assert page.input_value(editor_input(page, "services.0.events.0.code")) == "overload"
    assert page.input_value(editor_input(page, "services.0.properties.0.max")) == "250"
    shoot(page, "products-model-imported")
    # a file that is not a product JSON lists its errors
    bad_file = tmp_path / "bad.json"
    bad_file.write_text("{not json")
    page.set_input_files('[data-testid="import-file"]', str(bad_file))
    with page.expect_navigation():
        page.click('[data-testid="import-button"]')
    assert page.locator('[data-testid="model-errors"]').is_visible()
    assert page.locator('[data-field="import_file"]').is_visible()
    # the model being edited is still there
    assert page.input_value(editor_input(page, "services.0.events.0.code")) == "overload"
    shoot(page, "products-model-import-error")
    page.set_input_files('[data-testid="import-file"]', str(thinglinks_file))
    with page.expect_navigation():
        page.click('[data-testid="import-button"]')
    with page.expect_navigation():
        page.click('[data-testid="save-model"]')
    assert page.url == f"{live_server.url}/products/{identifier}/"
    assert product.services.get().events.get().code == "overload"
    assert page.locator(".flash li").is_visible()
    shoot(page, "products-model-saved")
    assert page.evaluate("window.hacked") is None
    assert page.js_errors == []
    if lang == "en":
        without_javascript(browser, live_server.url, identifier)


def without_javascript(browser, base_url: str, identifier: str) -> None:
    """Without JavaScript the page shows the model readably and its JSON can be edited."""
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1440,
                                                                       "height": 900})
    try:
        page = context.new_page()
        sign_in(page, base_url, "maker", start=f"/products/{identifier}/model/")
        assert not page.locator("#tm-editor").is_visible()
        readable = page.locator('[data-testid="model-readable"]')
        assert readable.is_visible() and "voltage" in readable.inner_text()
        page.click("#tm-json summary")
        services = json.loads(page.input_value('[data-testid="model-json"]'))
        services[0]["properties"][0]["max"] = 300
        page.fill('[data-testid="model-json"]', json.dumps(services))
        shoot(page, "products-model-nojs")
        with page.expect_navigation():
            page.click('[data-testid="save-model"]')
        assert page.url == f"{base_url}/products/{identifier}/"
        voltage = Product.objects.get(identifier=identifier).services.get().properties.get(
            code="voltage")
        assert voltage.max == 300
    finally:
        context.close()

/* The thing-model editor of the console's product pages (docs/console.md, "Products and the
 * thing-model editor"). Vanilla JS, no build step.
 *
 * The page renders the model readably and as JSON in the form's `model` text area; this script
 * replaces both with an editor: services with their properties, commands (request and response
 * parameters) and events (fields), added, removed and reordered, checked as they are typed
 * with the server's rules. The model goes back as JSON in the `model` field; the server checks
 * it again and its reasons (by path, e.g. `services.0.properties.2.min`) are shown next to the
 * element they belong to. Every text from the model is set with textContent / value, never
 * as HTML.
 */
(function () {
  "use strict";

  var root = document.getElementById("tm-editor");
  if (!root) { return; }
  var config = JSON.parse(document.getElementById("tm-config").textContent);
  var T = config.text;
  var services = JSON.parse(document.getElementById("tm-data").textContent);
  var serverErrors = JSON.parse(document.getElementById("tm-errors").textContent) || {};
  var textarea = document.getElementById("id_model");
  var summary = document.getElementById("tm-summary");
  var form = root.closest("form");
  var codeRe = new RegExp(config.code_re);
  var reserved = config.reserved;
  var NUMERIC = { int: true, bigint: true, decimal: true };
  var LENGTH = { string: true, binary: true, json: true };
  var clientErrors = {};

  if (!Array.isArray(services)) { services = []; }
  services = services.filter(isObject).map(normalService);

  function isObject(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }
  function list(v) { return Array.isArray(v) ? v.filter(isObject) : []; }
  function text(v) { return v === null || v === undefined ? "" : String(v); }

  function normalField(f, property) {
    var out = {
      code: text(f.code), name: text(f.name), datatype: text(f.datatype) || "int",
      unit: text(f.unit), min: f.min === undefined ? null : f.min,
      max: f.max === undefined ? null : f.max, step: f.step === undefined ? null : f.step,
      max_length: f.max_length === undefined ? null : f.max_length,
      enum_values: Array.isArray(f.enum_values) ? f.enum_values.slice() : [],
      required: !!f.required, description: text(f.description)
    };
    if (property) { out.access = text(f.access) || "RE"; }
    return out;
  }
  function normalService(s) {
    return {
      code: text(s.code), name: text(s.name), description: text(s.description),
      properties: list(s.properties).map(function (p) { return normalField(p, true); }),
      commands: list(s.commands).map(function (c) {
        return { code: text(c.code), name: text(c.name), description: text(c.description),
                 requests: list(c.requests).map(function (p) { return normalField(p); }),
                 responses: list(c.responses).map(function (p) { return normalField(p); }) };
      }),
      events: list(s.events).map(function (e) {
        return { code: text(e.code), name: text(e.name), description: text(e.description),
                 params: list(e.params).map(function (p) { return normalField(p); }) };
      })
    };
  }
  /* What a datatype does not use goes when the datatype changes. */
  function dropUnused(f) {
    if (!NUMERIC[f.datatype]) { f.min = null; f.max = null; f.step = null; f.unit = ""; }
    if (!LENGTH[f.datatype]) { f.max_length = null; }
    if (f.datatype !== "enum") { f.enum_values = []; }
  }
  function blankField(property) {
    return normalField({ datatype: "int" }, property);
  }

  /* --- DOM helpers (text only, never HTML) --- */
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === undefined || value === null || value === false) { return; }
      if (key === "text") { node.textContent = value; }
      else if (key === "className") { node.className = value; }
      else if (key.slice(0, 2) === "on") { node.addEventListener(key.slice(2), value); }
      else { node.setAttribute(key, value === true ? "" : value); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }
  function errorSpan(path) {
    return el("span", { className: "tm-error", "data-error-for": path, role: "alert" });
  }
  function button(label, act, onclick, extra) {
    return el("button", Object.assign({ type: "button", className: "tm-btn", text: label,
                                        "data-act": act, onclick: onclick }, extra || {}));
  }
  function iconButton(symbol, label, act, onclick) {
    return el("button", { type: "button", className: "tm-icon", text: symbol, title: label,
                           "aria-label": label, "data-act": act, onclick: onclick });
  }

  /* An input bound to obj[key]; `kind`: text | number | integer | checkbox | select. */
  function input(obj, key, path, label, kind, options, extra) {
    var control;
    var onChange = function () {
      if (kind === "checkbox") { obj[key] = control.checked; }
      else if (kind === "number" || kind === "integer") {
        var raw = control.value.trim();
        if (raw === "") { obj[key] = null; }
        else if (isFinite(Number(raw))) { obj[key] = Number(raw); }
        else { obj[key] = raw; }  // kept as typed: flagged, and refused by the server too
      } else { obj[key] = control.value; }
      if (key === "datatype") { dropUnused(obj); }
      delete serverErrors[path];
      changed(false);
    };
    if (kind === "select") {
      control = el("select", { "data-path": path, onchange: function () {
        onChange(); changed(true);
      } }, options.map(function (o) {
        return el("option", { value: o[0], text: o[1], selected: o[0] === obj[key] });
      }));
      if (options.every(function (o) { return o[0] !== obj[key]; })) {
        control.appendChild(el("option", { value: text(obj[key]), text: text(obj[key]),
                                            selected: true }));
      }
    } else if (kind === "checkbox") {
      control = el("input", { type: "checkbox", "data-path": path, onchange: onChange });
      control.checked = !!obj[key];
    } else {
      control = el("input", Object.assign({
        type: "text", "data-path": path, oninput: onChange,
        inputmode: kind === "number" ? "decimal" : (kind === "integer" ? "numeric" : null)
      }, extra || {}));
      control.value = text(obj[key]);
    }
    var wrap = el("label", { className: "tm-in tm-in-" + key + (kind === "checkbox" ? " tm-check" : "") }, [
      el("span", { className: "tm-label", text: label }), control, errorSpan(path)
    ]);
    return wrap;
  }

  function moveButtons(array, index, path) {
    return el("span", { className: "tm-move" }, [
      iconButton("↑", T.move_up, "up", function () { swap(array, index, index - 1); }),
      iconButton("↓", T.move_down, "down", function () { swap(array, index, index + 1); }),
      iconButton("✕", T.remove, "remove", function () { array.splice(index, 1); changed(true); })
    ]);
  }
  function swap(array, i, j) {
    if (j < 0 || j >= array.length) { return; }
    var item = array[i]; array[i] = array[j]; array[j] = item;
    changed(true);
  }

  /* --- rendering --- */
  function typedField(f, path, array, index, property) {
    var row = el("div", { className: "tm-field-row", "data-element": path });
    var main = el("div", { className: "tm-line" }, [
      input(f, "code", path + ".code", T.code, "text", null, { maxlength: 50, size: 14 }),
      input(f, "name", path + ".name", T.name, "text", null, { size: 14 }),
      input(f, "datatype", path + ".datatype", T.datatype, "select", config.datatypes),
      property ? input(f, "access", path + ".access", T.access, "select", config.access) : null,
      input(f, "required", path + ".required", T.required, "checkbox"),
      moveButtons(array, index, path)
    ]);
    row.appendChild(main);
    var specific = el("div", { className: "tm-line tm-specific" });
    if (NUMERIC[f.datatype]) {
      specific.appendChild(input(f, "min", path + ".min", T.min, "number", null, { size: 7 }));
      specific.appendChild(input(f, "max", path + ".max", T.max, "number", null, { size: 7 }));
      specific.appendChild(input(f, "step", path + ".step", T.step, "number", null, { size: 5 }));
      specific.appendChild(input(f, "unit", path + ".unit", T.unit, "text", null,
                                 { size: 6, maxlength: 20 }));
    } else if (LENGTH[f.datatype]) {
      specific.appendChild(input(f, "max_length", path + ".max_length", T.max_length,
                                 "integer", null, { size: 7 }));
    } else if (f.datatype === "enum") {
      specific.appendChild(enumEditor(f, path));
    }
    specific.appendChild(input(f, "description", path + ".description", T.description, "text",
                               null, { size: 24 }));
    row.appendChild(specific);
    row.appendChild(errorSpan(path));
    return row;
  }

  function enumEditor(f, path) {
    var box = el("div", { className: "tm-enum", "data-path": path + ".enum_values" }, [
      el("span", { className: "tm-label", text: T.enum_values })
    ]);
    f.enum_values.forEach(function (value, i) {
      var valuePath = path + ".enum_values." + i;
      var control = el("input", { type: "text", size: 8, "data-path": valuePath,
                                  oninput: function () {
                                    f.enum_values[i] = control.value;
                                    delete serverErrors[path + ".enum_values"];
                                    changed(false);
                                  } });
      control.value = isObject(value) || Array.isArray(value) ? JSON.stringify(value)
        : text(value);
      box.appendChild(el("span", { className: "tm-enum-value" }, [
        control,
        iconButton("✕", T.remove, "remove-value", function () {
          f.enum_values.splice(i, 1); changed(true);
        }),
        errorSpan(valuePath)
      ]));
    });
    box.appendChild(button(T.add_value, "add-value", function () {
      f.enum_values.push(""); changed(true);
      focusLast(path + ".enum_values." + (f.enum_values.length - 1));
    }));
    box.appendChild(errorSpan(path + ".enum_values"));
    return box;
  }

  function fieldList(items, path, property, addLabel, act) {
    var box = el("div", { className: "tm-list", "data-list": path });
    if (!items.length) { box.appendChild(el("p", { className: "muted tm-empty", text: T.empty })); }
    items.forEach(function (f, i) {
      box.appendChild(typedField(f, path + "." + i, items, i, property));
    });
    box.appendChild(button(addLabel, act, function () {
      items.push(blankField(property)); changed(true);
      focusLast(path + "." + (items.length - 1) + ".code");
    }));
    box.appendChild(errorSpan(path));
    return box;
  }

  function namedHead(obj, path, array, index) {
    return el("div", { className: "tm-line tm-head" }, [
      input(obj, "code", path + ".code", T.code, "text", null, { maxlength: 50, size: 14 }),
      input(obj, "name", path + ".name", T.name, "text", null, { size: 16 }),
      input(obj, "description", path + ".description", T.description, "text", null,
            { size: 28 }),
      moveButtons(array, index, path)
    ]);
  }

  function service(s, i) {
    var path = "services." + i;
    var card = el("div", { className: "tm-service", "data-element": path }, [
      el("h3", { text: T.service + " " + (i + 1) }),
      namedHead(s, path, services, i), errorSpan(path),
      el("h4", { text: T.properties }),
      fieldList(s.properties, path + ".properties", true, T.add_property, "add-property"),
      el("h4", { text: T.commands })
    ]);
    var commands = el("div", { className: "tm-list", "data-list": path + ".commands" });
    if (!s.commands.length) { commands.appendChild(el("p", { className: "muted tm-empty", text: T.empty })); }
    s.commands.forEach(function (c, j) {
      var cpath = path + ".commands." + j;
      commands.appendChild(el("div", { className: "tm-element", "data-element": cpath }, [
        namedHead(c, cpath, s.commands, j), errorSpan(cpath),
        el("div", { className: "tm-columns" }, [
          el("div", {}, [el("h5", { text: T.requests }),
                         fieldList(c.requests, cpath + ".requests", false, T.add_parameter,
                                   "add-request")]),
          el("div", {}, [el("h5", { text: T.responses }),
                         fieldList(c.responses, cpath + ".responses", false, T.add_parameter,
                                   "add-response")])
        ])
      ]));
    });
    commands.appendChild(button(T.add_command, "add-command", function () {
      s.commands.push({ code: "", name: "", description: "", requests: [], responses: [] });
      changed(true);
      focusLast(path + ".commands." + (s.commands.length - 1) + ".code");
    }));
    commands.appendChild(errorSpan(path + ".commands"));
    card.appendChild(commands);
    card.appendChild(el("h4", { text: T.events }));
    var events = el("div", { className: "tm-list", "data-list": path + ".events" });
    if (!s.events.length) { events.appendChild(el("p", { className: "muted tm-empty", text: T.empty })); }
    s.events.forEach(function (e, j) {
      var epath = path + ".events." + j;
      events.appendChild(el("div", { className: "tm-element", "data-element": epath }, [
        namedHead(e, epath, s.events, j), errorSpan(epath),
        el("h5", { text: T.params }),
        fieldList(e.params, epath + ".params", false, T.add_field, "add-event-field")
      ]));
    });
    events.appendChild(button(T.add_event, "add-event", function () {
      s.events.push({ code: "", name: "", description: "", params: [] });
      changed(true);
      focusLast(path + ".events." + (s.events.length - 1) + ".code");
    }));
    events.appendChild(errorSpan(path + ".events"));
    card.appendChild(events);
    return card;
  }

  function render() {
    root.textContent = "";
    if (!services.length) { root.appendChild(el("p", { className: "muted", text: T.no_services })); }
    services.forEach(function (s, i) { root.appendChild(service(s, i)); });
    root.appendChild(button(T.add_service, "add-service", function () {
      services.push(normalService({}));
      changed(true);
      focusLast("services." + (services.length - 1) + ".code");
    }, { className: "tm-btn tm-add-service" }));
    root.appendChild(errorSpan("services"));
    root.appendChild(errorSpan("model"));
  }

  function focusLast(path) {
    var node = root.querySelector('[data-path="' + path + '"]');
    if (node) { node.focus(); }
  }

  /* --- validation: the server's rules (webapp/products/serializers.py) --- */
  function add(errors, path, message) { (errors[path] = errors[path] || []).push(message); }
  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, function (m, key) {
      return values[key] === undefined ? m : values[key];
    });
  }
  function checkCode(errors, path, code) {
    if (!codeRe.test(code)) { add(errors, path + ".code", T.err_code); }
  }
  function checkDuplicates(errors, items, path) {
    var seen = {};
    items.forEach(function (item, i) {
      var folded = item.code.toLowerCase();
      if (!folded) { return; }
      if (Object.prototype.hasOwnProperty.call(seen, folded)) {
        add(errors, path + "." + i + ".code", format(T.err_duplicate, { code: item.code }));
      }
      seen[folded] = true;
    });
  }
  function isNumber(v) { return typeof v === "number" && isFinite(v); }
  function checkField(errors, f, path, property) {
    checkCode(errors, path, f.code);
    if (property && reserved.indexOf(f.code.toLowerCase()) >= 0) {
      add(errors, path + ".code", format(T.err_reserved, { code: f.code }));
    }
    if (f.name.length > 100) { add(errors, path + ".name", format(T.err_too_long, { n: 100 })); }
    if (f.unit.length > 20) { add(errors, path + ".unit", format(T.err_too_long, { n: 20 })); }
    ["min", "max", "step"].forEach(function (key) {
      if (f[key] !== null && !isNumber(f[key])) { add(errors, path + "." + key, T.err_number); }
    });
    if (isNumber(f.min) && isNumber(f.max) && f.min > f.max) {
      add(errors, path + ".min", T.err_min_max);
    }
    if (f.max_length !== null && !(Number.isInteger(f.max_length) && f.max_length >= 1
                                   && f.max_length <= 65535)) {
      add(errors, path + ".max_length", T.err_integer);
    }
    if (f.datatype === "enum") {
      if (!f.enum_values.length) { add(errors, path + ".enum_values", T.err_enum); }
      var seen = {};
      f.enum_values.forEach(function (v, i) {
        var key = JSON.stringify(v);
        if (typeof v === "string" && !v.trim()) { add(errors, path + ".enum_values." + i, T.err_enum_value); }
        else if (seen[key]) { add(errors, path + ".enum_values." + i, T.err_enum_duplicate); }
        seen[key] = true;
      });
    }
  }
  function validate() {
    var errors = {};
    var count = 0;
    services.forEach(function (s, i) {
      var path = "services." + i;
      count += 1 + s.properties.length + s.commands.length + s.events.length;
      checkCode(errors, path, s.code);
      s.properties.forEach(function (p, j) { checkField(errors, p, path + ".properties." + j, true); });
      checkDuplicates(errors, s.properties, path + ".properties");
      s.commands.forEach(function (c, j) {
        var cpath = path + ".commands." + j;
        count += c.requests.length + c.responses.length;
        checkCode(errors, cpath, c.code);
        c.requests.forEach(function (p, k) { checkField(errors, p, cpath + ".requests." + k, false); });
        c.responses.forEach(function (p, k) { checkField(errors, p, cpath + ".responses." + k, false); });
        checkDuplicates(errors, c.requests, cpath + ".requests");
        checkDuplicates(errors, c.responses, cpath + ".responses");
      });
      checkDuplicates(errors, s.commands, path + ".commands");
      s.events.forEach(function (e, j) {
        var epath = path + ".events." + j;
        count += e.params.length;
        checkCode(errors, epath, e.code);
        e.params.forEach(function (p, k) { checkField(errors, p, epath + ".params." + k, false); });
        checkDuplicates(errors, e.params, epath + ".params");
      });
      checkDuplicates(errors, s.events, path + ".events");
    });
    checkDuplicates(errors, services, "services");
    if (count > config.max_elements) {
      add(errors, "model", format(T.err_too_many, { n: config.max_elements }));
    }
    return errors;
  }

  function showErrors() {
    var problems = 0;
    root.querySelectorAll("[data-error-for]").forEach(function (span) {
      var path = span.getAttribute("data-error-for");
      var messages = (clientErrors[path] || []).concat(serverErrors[path] || []);
      span.textContent = messages.join(" ");
      span.hidden = !messages.length;
      var control = root.querySelector('[data-path="' + path + '"]');
      if (control) { control.classList.toggle("invalid", messages.length > 0); }
    });
    Object.keys(clientErrors).forEach(function (path) { problems += clientErrors[path].length; });
    summary.hidden = problems === 0;
    summary.textContent = problems ? format(T.errors_summary, { n: problems }) : "";
    summary.classList.toggle("error", problems > 0);
    return problems;
  }

  function serialise() {
    textarea.value = JSON.stringify(services);
  }

  function changed(structure) {
    if (structure) {
      serverErrors = {};  // the server's paths no longer name the same elements
      render();
    }
    clientErrors = validate();
    serialise();
    showErrors();
  }

  form.addEventListener("submit", function (event) {
    var submitter = event.submitter;
    if (submitter && submitter.value === "import") { return; }
    serialise();
    clientErrors = validate();
    if (showErrors()) {
      event.preventDefault();
      var first = root.querySelector(".invalid");
      if (first) { first.focus(); }
      summary.scrollIntoView({ block: "nearest" });
    }
  });

  /* --- start: the editor replaces the readable model and the JSON text area --- */
  document.querySelectorAll(".tm-readable, #tm-json").forEach(function (node) { node.hidden = true; });
  root.hidden = false;
  render();
  clientErrors = validate();
  serialise();
  showErrors();
})();

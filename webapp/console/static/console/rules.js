/* Rules: the rule builder (a form generated from the product's thing model, posted as the
   rule's JSON) and the test with a sample message. Data from the server is shown with
   textContent only. */
(function () {
  "use strict";

  var ALL_OPS = ["==", "!=", ">", ">=", "<", "<=", "between", "not_between", "in", "not_in",
    "contains", "not_contains", "exists", "changed", "increased_by", "decreased_by"];
  var NUMERIC = ["int", "bigint", "decimal"];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; } else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  function readJSON(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function option(value, label, selected) {
    var node = el("option", {value: value, text: label});
    if (selected) { node.selected = true; }
    return node;
  }

  function labelled(text, control, extraClass) {
    return el("label", {"class": "field" + (extraClass ? " " + extraClass : "")},
      [el("span", {"class": "field-label", text: text}), control]);
  }

  function shown(value) {
    if (value === null || value === undefined) { return "—"; }
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  /* ---------- the builder ---------- */

  function Builder(form, config, T) {
    this.form = form;
    this.config = config;
    this.T = T;
    this.model = null;
    this.trigger = {};
    this.tree = {kind: "group", mode: "all", not: false, children: []};
    this.actions = [];
    this.slots = {};
  }

  Builder.prototype.field = function (name) { return this.form.elements[name]; };

  Builder.prototype.start = function () {
    var self = this;
    var rule = this.config.rule;
    if (rule) { this.load(rule); }
    this.field("product").addEventListener("change", function () {
      self.trigger = {};
      self.fetchModel().then(function () { self.renderAll(); });
    });
    this.field("trigger_type").addEventListener("change", function () {
      self.trigger = {};
      self.renderAll();
    });
    this.field("debounce_mode").addEventListener("change", function () { self.showDebounce(); });
    this.form.addEventListener("input", function () { self.preview(); });
    this.form.addEventListener("change", function () { self.preview(); });
    this.form.querySelector("[data-add-action]").addEventListener("click", function () {
      var type = self.form.querySelector("[data-new-action]").value;
      var action = {type: type};
      if (type === "alarm") { action.severity = "major"; action.message = "{{device}}: {{property}} = {{value}}"; }
      self.actions.push(action);
      self.renderActions();
      self.preview();
    });
    this.form.addEventListener("submit", function (event) { event.preventDefault(); self.save(); });
    this.showDebounce();
    this.fetchModel().then(function () { self.renderAll(); });
  };

  Builder.prototype.load = function (rule) {
    var f = this.form.elements;
    f.name.value = rule.name || "";
    f.description.value = rule.description || "";
    f.enabled.checked = rule.enabled !== false;
    this.trigger = Object.assign({}, rule.trigger || {});
    f.product.value = this.trigger.product || "";
    f.trigger_type.value = this.trigger.type || "property";
    f.fire_mode.value = rule.fire_mode || "each";
    f.cooldown.value = rule.cooldown || 0;
    f.auto_clear.checked = rule.auto_clear !== false;
    var bounce = rule.debounce || {};
    if (bounce.window) {
      f.debounce_mode.value = "count";
      f.debounce_count.value = bounce.count;
      f.debounce_window.value = bounce.window;
    } else if (bounce.duration) {
      f.debounce_mode.value = "duration";
      f.debounce_duration.value = bounce.duration;
    }
    this.tree = this.parseCondition(rule.condition);
    this.actions = (rule.actions || []).map(function (a) { return Object.assign({}, a); });
  };

  Builder.prototype.parseCondition = function (node) {
    var self = this;
    function parse(n) {
      if (!n || typeof n !== "object" || Array.isArray(n)) { return null; }
      if (Array.isArray(n.all) || Array.isArray(n.any)) {
        var mode = Array.isArray(n.all) ? "all" : "any";
        return {kind: "group", mode: mode, not: false,
          children: n[mode].map(parse).filter(Boolean)};
      }
      if (n.not !== undefined) {
        var inner = parse(n.not);
        if (inner && inner.kind === "group" && !inner.not) { inner.not = true; return inner; }
        return {kind: "group", mode: "all", not: true, children: inner ? [inner] : []};
      }
      if (typeof n.expr === "string") { return {kind: "expr", text: n.expr}; }
      return {kind: "leaf", service: n.service || self.trigger.service || "",
        property: n.property || self.trigger.property || "", op: n.op || "==",
        value: n.value === undefined ? null : n.value, source: n.source};
    }
    if (!node || (typeof node === "object" && Object.keys(node).length === 0)) {
      return {kind: "group", mode: "all", not: false, children: []};
    }
    var root = parse(node);
    if (root && root.kind === "group") { return root; }
    return {kind: "group", mode: "all", not: false, children: root ? [root] : []};
  };

  Builder.prototype.fetchModel = function () {
    var self = this;
    var product = this.field("product").value;
    this.model = null;
    if (!product) { return Promise.resolve(); }
    var url = this.config.model_url.replace("__product__", encodeURIComponent(product));
    return window.Console.getJSON(url).then(function (model) {
      self.model = model;
    }).catch(function () {
      self.showErrors([{path: "", message: self.T.model_failed}]);
    });
  };

  Builder.prototype.showDebounce = function () {
    var mode = this.field("debounce_mode").value;
    this.form.querySelectorAll("[data-debounce]").forEach(function (node) {
      node.hidden = node.getAttribute("data-debounce") !== mode;
    });
  };

  Builder.prototype.services = function () { return this.model ? this.model.services : []; };

  /* The fields a condition can compare: the trigger's message fields, then every
     service's properties. */
  Builder.prototype.fields = function () {
    var T = this.T;
    var type = this.field("trigger_type").value;
    var trigger = this.trigger;
    var out = [];
    function add(service, spec, note) {
      out.push({service: service, code: spec.code, spec: spec,
        label: (service ? service + " · " : "") + (spec.name || spec.code) +
          (spec.name && spec.name !== spec.code ? " [" + spec.code + "]" : "") +
          " (" + spec.datatype + (spec.unit ? ", " + spec.unit : "") +
          (spec.range ? ", " + spec.range : "") + ")" + (note ? " — " + note : "")});
    }
    var services = this.services();
    if (type === "event") {
      services.forEach(function (svc) {
        svc.events.forEach(function (ev) {
          if (trigger.event && ev.code !== trigger.event) { return; }
          ev.params.forEach(function (p) { add(trigger.service || "", p, T.event_param); });
        });
      });
    } else if (type === "cmdrsp") {
      services.forEach(function (svc) {
        svc.commands.forEach(function (cmd) {
          if (trigger.command && cmd.code !== trigger.command) { return; }
          cmd.responses.forEach(function (p) { add(trigger.service || "", p, T.response_param); });
        });
      });
      add(trigger.service || "", {code: "err", datatype: "json"}, T.response_param);
    } else if (type === "status") {
      add("", {code: "status", datatype: "enum", enum_values: ["online", "offline"]});
      add("", {code: "reason", datatype: "string"});
    }
    services.forEach(function (svc) {
      svc.properties.forEach(function (p) { add(svc.code, p); });
    });
    return out;
  };

  Builder.prototype.renderAll = function () {
    this.renderTrigger();
    this.renderCondition();
    this.renderActions();
    this.preview();
  };

  Builder.prototype.renderTrigger = function () {
    var self = this;
    var T = this.T;
    var box = this.form.querySelector("[data-trigger-fields]");
    box.textContent = "";
    var type = this.field("trigger_type").value;
    var trigger = this.trigger;
    var services = this.services();
    function select(name, options, value, onChange) {
      var node = el("select", {"data-testid": "trigger-" + name});
      options.forEach(function (o) { node.appendChild(option(o[0], o[1], o[0] === value)); });
      node.addEventListener("change", function () { onChange(node.value); self.renderCondition(); self.renderActions(); self.preview(); });
      return node;
    }
    if (!this.model) {
      box.appendChild(el("span", {"class": "hint", text: T.pick_product}));
      return;
    }
    if (type === "property") {
      if (!trigger.service && services.length) { trigger.service = services[0].code; }
      box.appendChild(labelled(T.service, select("service", services.map(function (s) {
        return [s.code, (s.name || s.code) + " (" + s.code + ")"];
      }), trigger.service, function (v) { trigger.service = v; trigger.property = ""; self.renderTrigger(); })));
      var svc = services.filter(function (s) { return s.code === trigger.service; })[0];
      var props = [["", T.any_property]].concat((svc ? svc.properties : []).map(function (p) {
        return [p.code, (p.name || p.code) + " (" + p.code + ")"];
      }));
      box.appendChild(labelled(T.property, select("property", props, trigger.property || "",
        function (v) { trigger.property = v; })));
    } else if (type === "event" || type === "cmdrsp") {
      var kind = type === "event" ? "events" : "commands";
      var key = type === "event" ? "event" : "command";
      var choices = [["", "—"]];
      services.forEach(function (s) {
        s[kind].forEach(function (item) {
          choices.push([s.code + "/" + item.code, s.code + " · " + (item.name || item.code)]);
        });
      });
      var current = trigger[key] ? (trigger.service || "") + "/" + trigger[key] : "";
      if (current && !choices.some(function (c) { return c[0] === current; })) {
        var found = choices.filter(function (c) { return c[0].split("/")[1] === trigger[key]; })[0];
        current = found ? found[0] : current;
      }
      box.appendChild(labelled(T[key], select(key, choices, current, function (v) {
        var parts = v.split("/");
        trigger.service = parts[0] || "";
        trigger[key] = parts[1] || "";
      })));
    } else if (type === "status") {
      box.appendChild(labelled(T.status, select("status", [["", T.both], ["online", T.online],
        ["offline", T.offline]], trigger.status || "", function (v) { trigger.status = v; })));
    } else if (type === "schedule") {
      var cron = el("input", {type: "text", value: trigger.cron || "*/5 * * * *", "data-testid": "trigger-cron"});
      cron.addEventListener("input", function () { trigger.cron = cron.value; });
      trigger.cron = cron.value;
      var tz = el("input", {type: "text", value: trigger.timezone || "", placeholder: "Asia/Shanghai"});
      tz.addEventListener("input", function () { trigger.timezone = tz.value; });
      box.appendChild(labelled(T.cron, cron));
      box.appendChild(labelled(T.timezone, tz));
    }
    var groups = (this.model.groups || []).map(function (g) { return [String(g.id), g.name]; });
    var groupRef = trigger.group === undefined || trigger.group === null ? "" : String(
      typeof trigger.group === "object" ? trigger.group.id : trigger.group);
    if (groupRef && !groups.some(function (g) { return g[0] === groupRef; })) {
      groups.unshift([groupRef, groupRef]);
    }
    if (groups.length) {
      box.appendChild(labelled(T.group, select("group", [["", T.all_devices]].concat(groups),
        groupRef, function (v) {
          if (v === "") { delete trigger.group; } else { trigger.group = /^\d+$/.test(v) ? Number(v) : v; }
        })));
    }
  };

  Builder.prototype.renderCondition = function () {
    var box = this.form.querySelector("[data-condition]");
    box.textContent = "";
    if (!this.model) {
      box.appendChild(el("p", {"class": "hint", text: this.T.pick_product}));
      return;
    }
    box.appendChild(this.renderGroup(this.tree, null));
  };

  Builder.prototype.renderGroup = function (group, parent) {
    var self = this;
    var T = this.T;
    var wrap = el("div", {"class": "cond-group", "data-testid": "cond-group"});
    var head = el("div", {"class": "cond-head"});
    var mode = el("select", {"aria-label": T.all, "data-testid": "cond-mode"});
    mode.appendChild(option("all", T.all, group.mode === "all"));
    mode.appendChild(option("any", T.any, group.mode === "any"));
    mode.addEventListener("change", function () { group.mode = mode.value; });
    var negate = el("input", {type: "checkbox"});
    negate.checked = !!group.not;
    negate.addEventListener("change", function () { group.not = negate.checked; });
    head.appendChild(el("label", {"class": "cond-not"}, [negate, document.createTextNode(" " + T.not)]));
    head.appendChild(mode);
    function button(text, testid, onClick) {
      var node = el("button", {type: "button", text: text, "data-testid": testid});
      node.addEventListener("click", function () { onClick(); self.renderCondition(); self.preview(); });
      return node;
    }
    head.appendChild(button(T.add_condition, "cond-add", function () {
      var first = self.fields()[0];
      group.children.push({kind: "leaf", service: first ? first.service : "",
        property: first ? first.code : "", op: ">", value: null});
    }));
    head.appendChild(button(T.add_group, "cond-add-group", function () {
      group.children.push({kind: "group", mode: "any", not: false, children: []});
    }));
    head.appendChild(button(T.add_expression, "cond-add-expr", function () {
      group.children.push({kind: "expr", text: ""});
    }));
    if (parent) {
      head.appendChild(button(T.remove, "cond-remove", function () {
        parent.children.splice(parent.children.indexOf(group), 1);
      }));
    }
    wrap.appendChild(head);
    group.slot = el("div", {"class": "errors error"});
    wrap.appendChild(group.slot);
    var list = el("div", {"class": "cond-children"});
    if (!group.children.length && !parent) {
      list.appendChild(el("p", {"class": "hint", text: T.no_condition}));
    }
    group.children.forEach(function (child) {
      if (child.kind === "group") {
        list.appendChild(self.renderGroup(child, group));
      } else if (child.kind === "expr") {
        list.appendChild(self.renderExpr(child, group));
      } else {
        list.appendChild(self.renderLeaf(child, group));
      }
    });
    wrap.appendChild(list);
    return wrap;
  };

  Builder.prototype.removeButton = function (node, parent) {
    var self = this;
    var button = el("button", {type: "button", text: this.T.remove, "data-testid": "cond-remove"});
    button.addEventListener("click", function () {
      parent.children.splice(parent.children.indexOf(node), 1);
      self.renderCondition();
      self.preview();
    });
    return button;
  };

  Builder.prototype.renderExpr = function (node, parent) {
    var row = el("div", {"class": "cond-leaf"});
    var input = el("input", {type: "text", "class": "wide", value: node.text, placeholder: "temperature > 30 && humidity < 20", "aria-label": this.T.expression});
    input.addEventListener("input", function () { node.text = input.value; });
    row.appendChild(labelled(this.T.expression, input, "wide"));
    row.appendChild(this.removeButton(node, parent));
    node.slot = el("div", {"class": "errors error", "data-testid": "cond-error"});
    return el("div", {}, [row, node.slot]);
  };

  Builder.prototype.specOf = function (leaf) {
    var match = this.fields().filter(function (f) {
      return f.code === leaf.property && (f.service === leaf.service || !leaf.service || !f.service);
    })[0];
    return match || null;
  };

  Builder.prototype.renderLeaf = function (leaf, parent) {
    var self = this;
    var T = this.T;
    var fields = this.fields();
    var row = el("div", {"class": "cond-leaf", "data-testid": "cond-leaf"});
    var pick = el("select", {"data-testid": "cond-property"});
    var chosen = -1;
    fields.forEach(function (f, i) {
      var selected = chosen < 0 && f.code === leaf.property && (f.service === leaf.service || !f.service || !leaf.service);
      if (selected) { chosen = i; }
      pick.appendChild(option(String(i), f.label, selected));
    });
    pick.appendChild(option("other", T.other, chosen < 0));
    var custom = el("input", {type: "text", value: chosen < 0 ? leaf.property : "", placeholder: "service.property", "data-testid": "cond-custom", "aria-label": T.property});
    custom.hidden = chosen >= 0;
    if (chosen < 0 && leaf.service && leaf.property) { custom.value = leaf.service + "." + leaf.property; }
    var field = chosen >= 0 ? fields[chosen] : null;
    var spec = field ? field.spec : null;
    var datatype = spec ? spec.datatype : "";
    var ops = datatype && this.config.operators[datatype] ? this.config.operators[datatype] : ALL_OPS;
    var op = el("select", {"data-testid": "cond-op", "aria-label": T.operator});
    if (ops.indexOf(leaf.op) < 0) { ops = ops.concat([leaf.op]); }
    var names = this.config.operator_labels || {};
    ops.forEach(function (o) { op.appendChild(option(o, names[o] || o, o === leaf.op)); });
    pick.addEventListener("change", function () {
      if (pick.value === "other") {
        leaf.property = ""; leaf.service = "";
      } else {
        var f = fields[Number(pick.value)];
        leaf.service = f.service; leaf.property = f.code;
        var allowed = self.config.operators[f.spec.datatype] || ALL_OPS;
        if (allowed.indexOf(leaf.op) < 0) { leaf.op = allowed[0]; }
        leaf.value = null;
      }
      self.renderCondition();
      self.preview();
    });
    custom.addEventListener("input", function () {
      var text = custom.value.trim();
      var services = self.services().map(function (s) { return s.code; });
      var dot = text.indexOf(".");
      if (dot > 0 && services.indexOf(text.slice(0, dot)) >= 0) {
        leaf.service = text.slice(0, dot); leaf.property = text.slice(dot + 1);
      } else {
        leaf.service = self.trigger.service || ""; leaf.property = text;
      }
    });
    op.addEventListener("change", function () { leaf.op = op.value; self.renderCondition(); self.preview(); });
    row.appendChild(labelled(T.property, el("span", {"class": "stacked"}, [pick, custom])));
    row.appendChild(labelled(T.operator, op));
    row.appendChild(this.valueInput(leaf, spec));
    row.appendChild(this.removeButton(leaf, parent));
    leaf.slot = el("div", {"class": "errors error", "data-testid": "cond-error"});
    return el("div", {}, [row, leaf.slot]);
  };

  /* The value of a leaf as typed, turned into JSON of the property's type. */
  function typed(text, spec) {
    var datatype = spec ? spec.datatype : "";
    if (text === "" || text === null || text === undefined) { return null; }
    if (NUMERIC.indexOf(datatype) >= 0) {
      var number = Number(text);
      return text.trim() !== "" && isFinite(number) ? number : text;
    }
    if (datatype === "bool") { return text === "true" ? true : text === "false" ? false : text; }
    if (datatype === "enum" || datatype === "json" || !datatype) {
      try { return JSON.parse(text); } catch (e) { return text; }
    }
    return text;
  }

  function asText(value) {
    if (value === null || value === undefined) { return ""; }
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  Builder.prototype.valueInput = function (leaf, spec) {
    var T = this.T;
    var op = leaf.op;
    var datatype = spec ? spec.datatype : "";
    var box = el("span", {"class": "cond-value"});
    if (op === "exists" || op === "changed") { return box; }
    function single(value, onInput, label) {
      var input;
      if (datatype === "enum" || datatype === "bool") {
        input = el("select", {"data-testid": "cond-value", "aria-label": label});
        input.appendChild(option("", "—", value === null));
        var values = datatype === "bool" ? [true, false] : (spec.enum_values || []);
        values.forEach(function (v) { input.appendChild(option(JSON.stringify(v), String(v), JSON.stringify(v) === JSON.stringify(value))); });
        input.addEventListener("change", function () { onInput(input.value === "" ? null : JSON.parse(input.value)); });
      } else {
        var numeric = NUMERIC.indexOf(datatype) >= 0;
        input = el("input", {type: "text", inputmode: numeric ? "decimal" : "text", value: asText(value), "data-testid": "cond-value", "aria-label": label});
        if (spec && spec.range) { input.setAttribute("title", spec.range); }
        input.addEventListener("input", function () { onInput(typed(input.value, spec)); });
      }
      return input;
    }
    if (op === "between" || op === "not_between") {
      var pair = Array.isArray(leaf.value) ? leaf.value.slice(0, 2) : [null, null];
      leaf.value = pair;
      box.appendChild(labelled(T.low, single(pair[0], function (v) { pair[0] = v; }, T.low)));
      box.appendChild(labelled(T.high, single(pair[1], function (v) { pair[1] = v; }, T.high)));
      return box;
    }
    if (op === "in" || op === "not_in") {
      var list = el("input", {type: "text", value: Array.isArray(leaf.value) ? leaf.value.map(asText).join(", ") : "", placeholder: T.list_hint, "data-testid": "cond-value"});
      list.addEventListener("input", function () {
        leaf.value = list.value.split(",").map(function (s) { return s.trim(); })
          .filter(function (s) { return s !== ""; })
          .map(function (s) { return typed(s, spec || {datatype: "json"}); });
      });
      if (!Array.isArray(leaf.value)) { leaf.value = []; }
      box.appendChild(labelled(T.value, list));
      return box;
    }
    var spec2 = (op === "increased_by" || op === "decreased_by") ? {datatype: "decimal"} : spec;
    var keep = spec;
    spec = spec2;
    datatype = spec ? spec.datatype : "";
    var input = single(leaf.value, function (v) { leaf.value = v; }, T.value);
    spec = keep;
    box.appendChild(labelled(T.value + (spec && spec.unit ? " (" + spec.unit + ")" : ""), input));
    if (spec && spec.range) { box.appendChild(el("span", {"class": "hint", text: spec.range})); }
    return box;
  };

  Builder.prototype.renderActions = function () {
    var self = this;
    var T = this.T;
    var box = this.form.querySelector("[data-actions]");
    box.textContent = "";
    var labels = {};
    this.config.action_types.forEach(function (t) { labels[t[0]] = t[1]; });
    var model = this.model || {channels: [], sinks: [], devices: [], services: []};
    this.actions.forEach(function (action, index) {
      var card = el("div", {"class": "rule-action", "data-testid": "rule-action"});
      var head = el("div", {"class": "cond-head"}, [el("strong", {text: (index + 1) + ". " + (labels[action.type] || action.type)})]);
      var remove = el("button", {type: "button", text: T.remove});
      remove.addEventListener("click", function () { self.actions.splice(index, 1); self.renderActions(); self.preview(); });
      head.appendChild(remove);
      card.appendChild(head);
      var inputs = el("div", {"class": "inputs"});
      function text(key, label, placeholder) {
        var input = el("input", {type: "text", value: asText(action[key]), placeholder: placeholder || "", "data-testid": "action-" + key});
        input.addEventListener("input", function () { action[key] = input.value; });
        inputs.appendChild(labelled(label, input, "wide"));
      }
      function choose(key, label, options, numeric) {
        var select = el("select", {"data-testid": "action-" + key});
        if (!options.length) {
          inputs.appendChild(el("span", {"class": "hint", text: label + ": " + T.none_in_scope}));
          return;
        }
        var found = options.some(function (o) { return String(o[0]) === String(action[key]); });
        if (!found && action[key] !== undefined && action[key] !== "") { options = [[action[key], String(action[key])]].concat(options); }
        if (action[key] === undefined || action[key] === "") { action[key] = options[0][0]; }
        options.forEach(function (o) { select.appendChild(option(String(o[0]), o[1], String(o[0]) === String(action[key]))); });
        select.addEventListener("change", function () {
          action[key] = numeric && /^\d+$/.test(select.value) ? Number(select.value) : select.value;
          self.preview();
        });
        inputs.appendChild(labelled(label, select));
      }
      if (action.type === "alarm") {
        choose("severity", T.severity, self.config.severities);
        text("message", T.message, "{{device}}: {{property}} = {{value}}");
        text("name", T.alarm_name, "");
      } else if (action.type === "notify") {
        choose("channel", T.channel, model.channels.map(function (c) { return [c.id, c.name]; }), true);
        text("title", T.title, "");
      } else if (action.type === "forward") {
        choose("sink", T.sink, model.sinks.map(function (s) { return [s.id, s.name]; }), true);
      } else if (action.type === "webhook") {
        text("url", T.url, "https://");
        var secret = el("input", {type: "password", autocomplete: "new-password", value: action.secret || "", "data-testid": "action-secret"});
        secret.addEventListener("input", function () { action.secret = secret.value; });
        inputs.appendChild(labelled(T.secret, secret));
      } else if (action.type === "publish") {
        text("topic", T.topic, "alerts/{{device}}");
        text("payload", T.payload, "{{value}}");
        choose("qos", T.qos, [[0, "0"], [1, "1"], [2, "2"]], true);
      } else if (action.type === "command") {
        var commands = [];
        model.services.forEach(function (s) {
          s.commands.forEach(function (c) { commands.push({service: s.code, spec: c}); });
        });
        choose("device", T.target, [["{{device}}", T.fired_device]].concat(model.devices.map(function (d) { return [d, d]; })));
        var select = el("select", {"data-testid": "action-command"});
        commands.forEach(function (c) {
          select.appendChild(option(c.service + "/" + c.spec.code, c.service + " · " + (c.spec.name || c.spec.code),
            c.service === action.service && c.spec.code === action.command));
        });
        if (!action.command && commands.length) { action.service = commands[0].service; action.command = commands[0].spec.code; }
        select.addEventListener("change", function () {
          var parts = select.value.split("/");
          action.service = parts[0]; action.command = parts[1]; action.params = {};
          self.renderActions(); self.preview();
        });
        inputs.appendChild(labelled(T.command, select));
        var current = commands.filter(function (c) { return c.service === action.service && c.spec.code === action.command; })[0];
        action.params = action.params || {};
        (current ? current.spec.requests : []).forEach(function (p) {
          var value = action.params[p.code];
          var input;
          if (p.datatype === "enum" || p.datatype === "bool") {
            input = el("select", {});
            input.appendChild(option("", "—", value === undefined));
            (p.datatype === "bool" ? [true, false] : p.enum_values || []).forEach(function (v) {
              input.appendChild(option(JSON.stringify(v), String(v), JSON.stringify(v) === JSON.stringify(value)));
            });
          } else {
            input = el("input", {type: "text", value: asText(value), placeholder: p.datatype + (p.min !== null && p.min !== undefined ? " " + p.min + "…" + (p.max === null ? "" : p.max) : "")});
          }
          input.setAttribute("data-testid", "action-param-" + p.code);
          input.addEventListener(input.tagName === "SELECT" ? "change" : "input", function () {
            var v = input.tagName === "SELECT" ? (input.value === "" ? null : JSON.parse(input.value)) : typed(input.value, p);
            if (v === null) { delete action.params[p.code]; } else { action.params[p.code] = v; }
            self.preview();
          });
          inputs.appendChild(labelled((p.name || p.code) + (p.unit ? " (" + p.unit + ")" : "") + (p.required ? " *" : ""), input));
        });
      } else if (action.type !== "clear_alarm") {
        inputs.appendChild(el("span", {"class": "hint", text: T.kept}));
        inputs.appendChild(el("code", {text: JSON.stringify(action)}));
      }
      card.appendChild(inputs);
      action.slotNode = el("div", {"class": "errors error", "data-testid": "action-error"});
      card.appendChild(action.slotNode);
      box.appendChild(card);
    });
  };

  /* The rule's JSON, and where each part's errors are shown (by path). */
  Builder.prototype.build = function () {
    var f = this.form.elements;
    var slots = {};
    var trigger = {};
    Object.keys(this.trigger).forEach(function (key) {
      var value = this.trigger[key];
      if (value !== "" && value !== undefined && value !== null) { trigger[key] = value; }
    }, this);
    trigger.type = f.trigger_type.value;
    trigger.product = f.product.value;
    function node(n, path) {
      var json;
      if (n.kind === "group") {
        var children = n.children.map(function (c, i) {
          return node(c, (n.not ? path + ".not" : path) + "." + n.mode + "." + i);
        });
        json = {};
        json[n.mode] = children;
        if (n.not) { json = {not: json}; }
      } else if (n.kind === "expr") {
        json = {expr: n.text};
      } else {
        json = {property: n.property, op: n.op};
        if (n.service) { json.service = n.service; }
        if (n.source) { json.source = n.source; }
        if (n.op !== "exists" && n.op !== "changed") { json.value = n.value; }
      }
      if (n.slot) { slots[path] = n.slot; }
      if (n.kind === "group" && n.not && n.slot) { slots[path + ".not"] = n.slot; }
      return json;
    }
    var condition = this.tree.children.length ? node(this.tree, "condition") : {};
    if (!this.tree.children.length && this.tree.slot) { slots.condition = this.tree.slot; }
    var actions = this.actions.map(function (a, i) {
      var copy = {};
      Object.keys(a).forEach(function (key) {
        if (key !== "slotNode" && a[key] !== "" && a[key] !== undefined) { copy[key] = a[key]; }
      });
      if (a.slotNode) { slots["actions." + i] = a.slotNode; }
      return copy;
    });
    var debounce = {};
    if (f.debounce_mode.value === "count") {
      debounce = {count: Number(f.debounce_count.value), window: Number(f.debounce_window.value)};
    } else if (f.debounce_mode.value === "duration") {
      debounce = {duration: Number(f.debounce_duration.value)};
    }
    this.slots = slots;
    return {name: f.name.value, description: f.description.value, enabled: f.enabled.checked,
      trigger: trigger, condition: condition, actions: actions, debounce: debounce,
      cooldown: Number(f.cooldown.value || 0), fire_mode: f.fire_mode.value,
      auto_clear: f.auto_clear.checked};
  };

  Builder.prototype.preview = function () {
    this.form.querySelector("[data-preview]").textContent = JSON.stringify(this.build(), null, 2);
  };

  Builder.prototype.clearErrors = function () {
    this.form.querySelectorAll(".errors").forEach(function (node) { node.textContent = ""; });
    this.form.querySelectorAll(".has-error").forEach(function (node) { node.classList.remove("has-error"); });
  };

  Builder.prototype.showErrors = function (errors) {
    var self = this;
    var general = this.form.querySelector("[data-errors]");
    errors.forEach(function (error) {
      var path = error.path || "";
      var target = null;
      var probe = path;
      while (probe) {
        if (self.slots[probe]) { target = self.slots[probe]; break; }
        var fixed = self.form.querySelector('.errors[data-path="' + probe.replace(/"/g, "") + '"]');
        if (fixed) { target = fixed; break; }
        probe = probe.lastIndexOf(".") > 0 ? probe.slice(0, probe.lastIndexOf(".")) : "";
      }
      target = target || general;
      target.appendChild(el("p", {text: error.message}));
      if (target.parentNode) { target.parentNode.classList.add("has-error"); }
    });
  };

  Builder.prototype.save = function () {
    var self = this;
    var T = this.T;
    var rule = this.build();
    var status = this.form.querySelector("[data-status]");
    this.clearErrors();
    status.textContent = T.saving;
    fetch(this.config.save_url, {
      method: "POST", credentials: "same-origin", body: JSON.stringify(rule),
      headers: {"Content-Type": "application/json", "Accept": "application/json",
        "X-CSRFToken": window.Console.csrfToken()}
    }).then(function (response) {
      return response.json().then(function (body) { return {ok: response.ok, body: body}; });
    }).then(function (result) {
      if (result.ok && result.body.url) { window.location.assign(result.body.url); return; }
      status.textContent = result.body.detail || T.not_saved;
      self.showErrors(result.body.errors || [{path: "", message: result.body.detail || T.not_saved}]);
    }).catch(function () {
      status.textContent = T.not_saved;
    });
  };

  /* ---------- the test with a sample message ---------- */

  function verdict(T, held, unknown) {
    var word = unknown ? T.unknown : held ? T["true"] : T["false"];
    return el("span", {"class": "verdict " + (unknown ? "unknown" : held ? "yes" : "no"),
      "data-testid": "verdict", text: word});
  }

  function explainNode(T, node) {
    var item = el("li", {});
    if (node.all || node.any) {
      var mode = node.all ? "all" : "any";
      item.appendChild(verdict(T, node.held, false));
      item.appendChild(document.createTextNode(" " + T[mode]));
      var list = el("ul", {});
      node[mode].forEach(function (child) { list.appendChild(explainNode(T, child)); });
      item.appendChild(list);
    } else if (node.not) {
      item.appendChild(verdict(T, node.held, false));
      item.appendChild(document.createTextNode(" " + T.not));
      item.appendChild(el("ul", {}, [explainNode(T, node.not)]));
    } else if (node.expr !== undefined) {
      item.appendChild(verdict(T, node.held, !!node.error));
      item.appendChild(el("code", {text: " " + node.expr + " "}));
      item.appendChild(el("span", {"class": "muted", text: node.reason || ""}));
    } else if (node.op !== undefined) {
      var unknown = node.source === null || node.source === undefined;
      item.setAttribute("data-testid", "test-leaf");
      item.appendChild(verdict(T, node.held, unknown));
      item.appendChild(el("code", {text: " " + (node.service ? node.service + "." : "") + node.property + " " + node.op + " " + shown(node.expected) + " "}));
      var facts = T.actual + " " + shown(node.actual);
      if (node.source) { facts += " (" + (node.source === "message" ? T.from_message : T.from_latest) + ")"; }
      if (node.previous !== undefined) { facts += ", " + T.previous + " " + shown(node.previous); }
      item.appendChild(el("span", {"class": "muted", text: facts + " — " + (node.reason || "")}));
    } else {
      item.appendChild(verdict(T, node.held, false));
      item.appendChild(el("span", {"class": "muted", text: " " + (node.reason || "")}));
    }
    return item;
  }

  /* The sample message: the values, and what the trigger's kind of message carries. */
  function sample(section, device, values) {
    var body = {device: device, values: values};
    var kind = section.getAttribute("data-kind");
    if (kind === "status" && typeof values.status === "string") { body.status = values.status; }
    if (kind === "event") { body.event = section.getAttribute("data-event") || ""; }
    if (kind === "cmdrsp") {
      body.command = section.getAttribute("data-command") || "";
      if (values.err !== undefined) { body.err = values.err; }
    }
    return body;
  }

  function startTest(section) {
    var T = readJSON("rule-test-text") || {};
    var form = section.querySelector("[data-test-form]");
    var out = section.querySelector("[data-test-result]");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      out.textContent = "";
      var values = {};
      var raw = form.elements.json.value.trim();
      if (raw) {
        try { values = JSON.parse(raw); } catch (e) { values = null; }
        if (!values || typeof values !== "object" || Array.isArray(values)) {
          out.appendChild(el("p", {"class": "error", text: T.bad_json}));
          return;
        }
      } else {
        form.querySelectorAll("[name^='value.']").forEach(function (input) {
          if (input.value === "") { return; }
          values[input.name.slice(6)] = typed(input.value, {datatype: input.getAttribute("data-datatype")});
        });
      }
      out.appendChild(el("p", {"class": "muted", text: T.testing}));
      fetch(section.getAttribute("data-url"), {
        method: "POST", credentials: "same-origin",
        body: JSON.stringify(sample(section, form.elements.device.value, values)),
        headers: {"Content-Type": "application/json", "Accept": "application/json",
          "X-CSRFToken": window.Console.csrfToken()}
      }).then(function (response) {
        return response.json().then(function (body) { return {ok: response.ok, body: body}; });
      }).then(function (result) {
        showResult(T, out, result);
      }).catch(function () {
        out.textContent = "";
        out.appendChild(el("p", {"class": "error", text: T.failed}));
      });
    });
  }

  /* The answer of a test (saved rule or draft): verdicts, actions, notes. */
  function showResult(T, out, result) {
        out.textContent = "";
        var body = result.body;
        if (!result.ok) {
          out.appendChild(el("p", {"class": "error", text: body.detail || T.failed}));
          (body.errors || []).forEach(function (e) { out.appendChild(el("p", {"class": "error", text: (e.path ? e.path + ": " : "") + e.message})); });
          return;
        }
        out.appendChild(el("p", {"class": "test-outcome " + (body.matched ? "yes" : "no"), "data-testid": "test-outcome",
          text: body.matched ? T.fires : T.not_fires}));
        (body.trigger || []).forEach(function (note) { out.appendChild(el("p", {"class": "notice", text: T.trigger + ": " + note})); });
        out.appendChild(el("ul", {"class": "explain"}, [explainNode(T, body.conditions)]));
        if (body.matched) {
          out.appendChild(el("p", {text: body.actions.length ? T.actions : T.no_actions}));
          var list = el("ul", {"class": "explain", "data-testid": "test-actions"});
          body.actions.forEach(function (action) {
            list.appendChild(el("li", {}, [el("code", {text: JSON.stringify(action)})]));
          });
          out.appendChild(list);
        }
        if ((body.debounce && Object.keys(body.debounce).length) || body.cooldown) {
          out.appendChild(el("p", {"class": "hint", text: T.debounce}));
        }
  }

  /* The test of the builder's draft: the rule as built now, posted with the sample. */
  Builder.prototype.startDraftTest = function () {
    var self = this;
    var box = this.form.querySelector("[data-draft-test]");
    if (!box || !this.config.test_url) { return; }
    var T = readJSON("rule-test-text") || {};
    var out = box.querySelector("[data-draft-result]");
    var devices = box.querySelector("[name=draft_device]");
    function fillDevices() {
      var current = devices.value;
      devices.textContent = "";
      devices.appendChild(option("", T.no_device || "—", current === ""));
      ((self.model && self.model.devices) || []).forEach(function (d) {
        devices.appendChild(option(d, d, d === current));
      });
    }
    box.addEventListener("toggle", fillDevices);
    box.querySelector("[data-draft-run]").addEventListener("click", function () {
      out.textContent = "";
      var values = {};
      var raw = box.querySelector("[name=draft_values]").value.trim();
      if (raw) {
        try { values = JSON.parse(raw); } catch (e) { values = null; }
        if (!values || typeof values !== "object" || Array.isArray(values)) {
          out.appendChild(el("p", {"class": "error", text: T.bad_json}));
          return;
        }
      }
      var rule = self.build();
      var body = {rule: rule, device: devices.value, values: values};
      var trigger = rule.trigger || {};
      if (trigger.type === "status" && typeof values.status === "string") { body.status = values.status; }
      if (trigger.type === "event") { body.event = trigger.event || ""; }
      if (trigger.type === "cmdrsp") {
        body.command = trigger.command || "";
        if (values.err !== undefined) { body.err = values.err; }
      }
      out.appendChild(el("p", {"class": "muted", text: T.testing}));
      fetch(self.config.test_url, {
        method: "POST", credentials: "same-origin", body: JSON.stringify(body),
        headers: {"Content-Type": "application/json", "Accept": "application/json",
          "X-CSRFToken": window.Console.csrfToken()}
      }).then(function (response) {
        return response.json().then(function (b) { return {ok: response.ok, body: b}; });
      }).then(function (result) {
        showResult(T, out, result);
      }).catch(function () {
        out.textContent = "";
        out.appendChild(el("p", {"class": "error", text: T.failed}));
      });
    });
  };

  var form = document.querySelector("[data-rule-builder]");
  if (form) {
    var builder = new Builder(form, readJSON("rule-builder-data"), readJSON("rule-builder-text"));
    builder.start();
    builder.startDraftTest();
  }
  var test = document.querySelector("[data-rule-test]");
  if (test) { startTest(test); }
})();

/* A custom dashboard: a 12-column CSS grid of widgets (chart, gauge, value, map as a list of
   positions, alarms, table, command button), moved and resized with pointer events, saved as
   JSON the server validates, and fed live over /ws/dashboards/<id>/. */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("board-config").textContent);
  var L = config.labels;
  var W = window.Widgets;
  var COLUMNS = config.limits.columns;
  var ROW_PX = 80;
  var GAP_PX = 12;
  var COLOURS = ["#409eff", "#67c23a", "#e6a23c", "#f56c6c", "#9b59b6", "#1abc9c", "#d35400",
                 "#909399"];
  var board = document.getElementById("board");
  var status = document.getElementById("board-status");
  var widgets = (config.layout && config.layout.widgets) || [];
  var meta = config.meta || {};
  var views = {};  // widget id -> {live(device, point), resize(), refresh()}
  var editing = false;
  var editHook = null;  // set by the editor: open a widget in the form

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function propMeta(device, key) {
    var d = meta[device];
    return (d && d.properties[key]) || {name: key, unit: "", min: null, max: null};
  }

  function setStatus(text, kind) {
    status.textContent = text;
    status.setAttribute("data-kind", kind || "");
  }

  function markDirty() {
    if (editing) { setStatus(L.unsaved, "dirty"); }
  }

  // Placement ---------------------------------------------------------------------------

  function place(node, w) {
    node.style.gridColumn = (w.x + 1) + " / span " + w.w;
    node.style.gridRow = (w.y + 1) + " / span " + w.h;
    node.setAttribute("data-x", w.x);
    node.setAttribute("data-y", w.y);
    node.setAttribute("data-w", w.w);
    node.setAttribute("data-h", w.h);
  }

  function cellSize() {
    var width = board.clientWidth;
    return {col: (width - GAP_PX * (COLUMNS - 1)) / COLUMNS + GAP_PX, row: ROW_PX + GAP_PX};
  }

  function clamp(value, low, high) { return Math.max(low, Math.min(high, value)); }

  function dragger(node, w, handle, resizing) {
    handle.addEventListener("pointerdown", function (event) {
      if (!editing || event.button !== 0 || event.target.closest("button")) { return; }
      event.preventDefault();
      handle.setPointerCapture(event.pointerId);
      var start = {px: event.clientX, py: event.clientY, x: w.x, y: w.y, w: w.w, h: w.h};
      var size = cellSize();
      node.classList.add(resizing ? "resizing" : "dragging");
      function move(e) {
        var dc = Math.round((e.clientX - start.px) / size.col);
        var dr = Math.round((e.clientY - start.py) / size.row);
        if (resizing) {
          w.w = clamp(start.w + dc, 1, COLUMNS - w.x);
          w.h = clamp(start.h + dr, 1, 12);
        } else {
          w.x = clamp(start.x + dc, 0, COLUMNS - w.w);
          w.y = clamp(start.y + dr, 0, 200);
        }
        place(node, w);
      }
      function up(e) {
        handle.releasePointerCapture(e.pointerId);
        handle.removeEventListener("pointermove", move);
        handle.removeEventListener("pointerup", up);
        handle.removeEventListener("pointercancel", up);
        node.classList.remove("resizing", "dragging");
        if (start.x !== w.x || start.y !== w.y || start.w !== w.w || start.h !== w.h) {
          settle(w);
          markDirty();
          if (views[w.id] && views[w.id].resize) { views[w.id].resize(); }
        }
      }
      handle.addEventListener("pointermove", move);
      handle.addEventListener("pointerup", up);
      handle.addEventListener("pointercancel", up);
    });
  }

  function overlap(a, b) {
    return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
  }

  /* After `moved` was dropped: push every widget it (or a widget pushed) now covers down below
     it, top to bottom, so that no two widgets overlap; then float every widget up as far as
     it goes, so that no empty rows are left between them. */
  function settle(moved) {
    var settled = [moved];
    var byRow = function (a, b) { return a.y - b.y || a.x - b.x; };
    widgets.filter(function (o) { return o !== moved; }).sort(byRow).forEach(function (o) {
      var pushed = true;
      while (pushed) {
        pushed = false;
        settled.forEach(function (s) {
          if (overlap(o, s)) { o.y = s.y + s.h; pushed = true; }
        });
      }
      settled.push(o);
    });
    var placed = [];
    widgets.slice().sort(byRow).forEach(function (o) {
      while (o.y > 0 && !placed.some(function (p) {
        return overlap({x: o.x, y: o.y - 1, w: o.w, h: o.h}, p);
      })) { o.y -= 1; }
      placed.push(o);
      var node = board.querySelector('.widget[data-id="' + CSS.escape(o.id) + '"]');
      if (node) { place(node, o); }
    });
  }

  // Widgets -----------------------------------------------------------------------------

  function titleOf(w) {
    if (w.title) { return w.title; }
    if (w.type === "gauge" || w.type === "value") {
      return propMeta(w.device, w.service + "." + w.property).name + " · " + w.device;
    }
    if (w.type === "command") { return w.service + "." + w.command + " · " + w.device; }
    return L.types[w.type];
  }

  function render(w) {
    var node = el("section", "widget widget-" + w.type);
    node.setAttribute("data-id", w.id);
    node.setAttribute("data-type", w.type);
    node.setAttribute("data-testid", "widget-" + w.id);
    var head = el("header", "widget-head");
    head.appendChild(el("span", "widget-title", titleOf(w)));
    head.title = L.drag;
    var remove = el("button", "link widget-remove", L.remove);
    remove.type = "button";
    remove.addEventListener("click", function () {
      widgets = widgets.filter(function (x) { return x !== w; });
      delete views[w.id];
      node.remove();
      empty();
      markDirty();
    });
    if (config.can_change) {
      var change = el("button", "link widget-edit", L.edit);
      change.type = "button";
      change.setAttribute("data-testid", "edit-" + w.id);
      change.addEventListener("click", function () { if (editHook) { editHook(w, node); } });
      head.appendChild(change);
    }
    head.appendChild(remove);
    var body = el("div", "widget-body");
    var grip = el("span", "widget-resize");
    grip.title = L.resize;
    grip.setAttribute("data-testid", "resize-" + w.id);
    node.appendChild(head);
    node.appendChild(body);
    node.appendChild(grip);
    place(node, w);
    board.appendChild(node);
    dragger(node, w, head, false);
    dragger(node, w, grip, true);
    views[w.id] = (BUILDERS[w.type] || function () { return {}; })(w, body);
    return node;
  }

  function empty() {
    document.getElementById("board-empty").hidden = widgets.length > 0;
  }

  function latest(devices) {
    var params = new URLSearchParams();
    devices.forEach(function (d) { params.append("d", d); });
    return Console.getJSON(config.urls.latest + "?" + params.toString());
  }

  function valueOf(device, key) {
    var parts = key.split(".");
    var service = device.values[parts[0]] || {};
    return service[parts.slice(1).join(".")];
  }

  function fail(body, error) {
    body.textContent = "";
    body.appendChild(el("p", "error", L.failed + " " + (error.message || "")));
  }

  var BUILDERS = {
    value: function (w, body) {
      var key = w.service + "." + w.property;
      var m = propMeta(w.device, key);
      var big = el("div", "big");
      var v = el("span", "v", "—");
      big.appendChild(v);
      big.appendChild(el("span", "unit", " " + (m.unit || "")));
      var when = el("div", "muted when");
      body.appendChild(big);
      body.appendChild(when);
      function set(value, ts) {
        v.textContent = W.display(value, L);
        when.textContent = ts ? Console.formatTime(new Date(ts)) : L.no_value;
      }
      latest([w.device]).then(function (data) {
        var d = data.devices[0];
        var entry = d && valueOf(d, key);
        set(entry ? entry.value : null, entry ? entry.ts : null);
      }).catch(function (e) { fail(body, e); });
      return {live: function (device, point) {
        if (device === w.device && point.service === w.service && w.property in point.values) {
          set(point.values[w.property], point.ts);
        }
      }};
    },

    gauge: function (w, body) {
      var key = w.service + "." + w.property;
      var m = propMeta(w.device, key);
      var min = m.min === null || m.min === undefined ? 0 : m.min;
      var max = m.max === null || m.max === undefined ? 100 : m.max;
      var dial = el("div", "gauge-dial");
      var text = el("div", "gauge-value");
      var v = el("span", "v", "—");
      text.appendChild(v);
      text.appendChild(el("span", "unit", " " + (m.unit || "")));
      body.appendChild(dial);
      body.appendChild(text);
      var set = W.gauge(dial, min, max);
      function show(value) { v.textContent = W.display(value, L); set(value); }
      latest([w.device]).then(function (data) {
        var d = data.devices[0];
        var entry = d && valueOf(d, key);
        show(entry ? entry.value : null);
      }).catch(function (e) { fail(body, e); });
      return {live: function (device, point) {
        if (device === w.device && point.service === w.service && w.property in point.values) {
          show(point.values[w.property]);
        }
      }};
    },

    chart: function (w, body) {
      var box = el("div", "widget-chart");
      var note = el("div", "muted chart-note", L.loading);
      body.appendChild(note);
      body.appendChild(box);
      var state = {plot: null, data: null, index: {}};
      var params = new URLSearchParams();
      w.series.forEach(function (s) { params.append("s", s.device + ":" + s.service + "." + s.property); });
      if (w.window.hours) {
        params.set("hours", String(w.window.hours));
        note.textContent = L.last_hours.replace("{n}", w.window.hours);
      } else {
        params.set("start", w.window.from);
        params.set("end", w.window.to);
        note.textContent = Console.formatTime(new Date(w.window.from)) + " – " +
          Console.formatTime(new Date(w.window.to));
      }
      function numeric(value) {
        if (typeof value === "boolean") { return value ? 1 : 0; }
        return typeof value === "number" ? value : null;
      }
      function size() {
        return {width: Math.max(120, body.clientWidth - 24),
                height: Math.max(80, body.clientHeight - note.offsetHeight - 40)};
      }
      Console.getJSON(config.urls.series + "?" + params.toString()).then(function (result) {
        var times = {};
        result.series.forEach(function (s) { s.points.forEach(function (p) { times[p[0]] = true; }); });
        var xs = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
        var at = {};
        xs.forEach(function (t, i) { at[t] = i; });
        var data = [xs.map(function (t) { return t / 1000; })];
        result.series.forEach(function (s, n) {
          var column = xs.map(function () { return null; });
          s.points.forEach(function (p) { column[at[p[0]]] = numeric(p[1]); });
          data.push(column);
          state.index[s.device + ":" + s.service + "." + s.property] = n + 1;
        });
        var count = xs.length;
        box.setAttribute("data-points", String(count));
        box.setAttribute("data-series", String(result.series.length));
        if (!count) { note.textContent += " · " + L.empty; }
        state.data = data;
        state.plot = new uPlot(Object.assign(size(), {
          fmtDate: Console.chartDate,
          series: [{label: L.time || "Time"}].concat(result.series.map(function (s, n) {
            return {label: s.device + " · " + s.name + (s.unit ? " (" + s.unit + ")" : ""),
                    stroke: COLOURS[n % COLOURS.length], width: 2, spanGaps: true};
          })),
          axes: [{}, {size: 50}], legend: {live: false}
        }), data, box);
      }).catch(function (e) { fail(body, e); });
      return {
        resize: function () { if (state.plot) { state.plot.setSize(size()); } },
        live: function (device, point) {
          if (!state.plot || w.window.from) { return; }
          var touched = false;
          var row = state.data.map(function () { return null; });
          row[0] = point.ts / 1000;
          Object.keys(point.values).forEach(function (code) {
            var n = state.index[device + ":" + point.service + "." + code];
            if (n) { row[n] = numeric(point.values[code]); touched = true; }
          });
          if (!touched) { return; }
          state.data.forEach(function (column, i) { column.push(row[i]); });
          state.plot.setData(state.data);
        }
      };
    },

    table: function (w, body) {
      var table = el("table", "table compact");
      var head = el("tr");
      head.appendChild(el("th", "", L.device));
      w.properties.forEach(function (key) {
        var m = propMeta(w.devices[0], key);
        head.appendChild(el("th", "", m.name + (m.unit ? " (" + m.unit + ")" : "")));
      });
      var thead = el("thead");
      thead.appendChild(head);
      var tbody = el("tbody");
      table.appendChild(thead);
      table.appendChild(tbody);
      body.appendChild(table);
      var cells = {};
      latest(w.devices).then(function (data) {
        data.devices.forEach(function (d) {
          var tr = el("tr");
          tr.appendChild(el("td", "", d.device + (d.name ? " · " + d.name : "")));
          w.properties.forEach(function (key) {
            var entry = valueOf(d, key);
            var td = el("td", "v", W.display(entry ? entry.value : null, L));
            cells[d.device + ":" + key] = td;
            tr.appendChild(td);
          });
          tbody.appendChild(tr);
        });
      }).catch(function (e) { fail(body, e); });
      return {live: function (device, point) {
        Object.keys(point.values).forEach(function (code) {
          var td = cells[device + ":" + point.service + "." + code];
          if (td) { td.textContent = W.display(point.values[code], L); }
        });
      }};
    },

    map: function (w, body) {
      // The console's map (TLMap, static/console/map.js); a list of positions without it.
      var params = new URLSearchParams();
      w.devices.forEach(function (d) { params.append("d", d); });
      var url = config.urls.positions + "?" + params.toString();
      var note = el("div", "muted map-note");
      if (window.TLMap && window.L) {
        var box = el("div", "widget-map");
        body.appendChild(box);
        body.appendChild(note);
        var handle = window.TLMap.mount(box, {
          url: url, tileUrl: config.map.tileUrl, attribution: config.map.attribution,
          maxZoom: config.map.maxZoom, labels: config.map.labels, fit: "first",
          onLoad: function (data) {
            box.setAttribute("data-loaded", String(data.count));
            note.textContent = data.unplaced.length ? L.unplaced + " " + data.unplaced.join(", ") : "";
          }
        });
        return {resize: function () { handle.invalidate(); }};
      }
      var table = el("table", "table compact");
      var tbody = el("tbody");
      table.appendChild(tbody);
      body.appendChild(table);
      Console.getJSON(url).then(function (data) {
        data.devices.forEach(function (d) {
          var tr = el("tr");
          var link = el("a", "", d.id);
          link.href = d.url;
          var first = el("td");
          first.appendChild(link);
          tr.appendChild(first);
          tr.appendChild(el("td", "", d.lat.toFixed(4) + ", " + d.lon.toFixed(4)));
          tr.appendChild(el("td", "", config.map.labels[d.status] || d.status));
          tbody.appendChild(tr);
        });
        data.unplaced.forEach(function (id) {
          var tr = el("tr");
          tr.appendChild(el("td", "", id));
          tr.appendChild(el("td", "muted", L.no_position));
          tbody.appendChild(tr);
        });
      }).catch(function (e) { fail(body, e); });
      return {};
    },

    alarms: function (w, body) {
      var list = el("ul", "alarm-items");
      body.appendChild(list);
      function load() {
        var params = new URLSearchParams();
        w.devices.forEach(function (d) { params.append("d", d); });
        Console.getJSON(config.urls.alarms + "?" + params.toString())
          .then(function (data) { W.alarmItems(list, data.alarms, L); })
          .catch(function (e) { fail(body, e); });
      }
      load();
      setInterval(load, 30000);
      return {};
    },

    command: function (w, body) {
      var button = el("button", "primary", L.send);
      button.type = "button";
      button.disabled = !config.can_command;
      var output = el("output", "command-result");
      body.appendChild(el("div", "muted", w.service + "." + w.command + " " +
                          JSON.stringify(w.params || {})));
      body.appendChild(button);
      body.appendChild(output);
      button.addEventListener("click", function () {
        if (editing) { return; }
        output.textContent = L.sending;
        var form = new FormData();
        form.append("widget", w.id);
        fetch(config.urls.command, {method: "POST", body: form, credentials: "same-origin",
                                    headers: {"Accept": "application/json",
                                              "X-CSRFToken": Console.csrfToken()}})
          .then(function (r) { return r.json().then(function (b) { return {ok: r.ok, body: b}; }); })
          .then(function (result) {
            output.textContent = result.ok ? L.sent + " · " + (L.command[result.body.status] ||
              result.body.status) : L.error + ": " + (result.body.detail || "");
            output.setAttribute("data-status", result.ok ? result.body.status : "refused");
          }).catch(function (e) { output.textContent = L.error + ": " + e.message; });
      });
      return {};
    }
  };

  // Live --------------------------------------------------------------------------------

  W.socket(config.ws, {
    state: W.liveState(L),
    update: function (update) {
      (update.points || []).forEach(function (point) {
        Object.keys(views).forEach(function (id) {
          if (views[id].live) { views[id].live(update.device, point); }
        });
      });
    }
  });

  widgets.forEach(render);
  empty();
  window.addEventListener("resize", function () {
    Object.keys(views).forEach(function (id) { if (views[id].resize) { views[id].resize(); } });
  });

  // Editing -----------------------------------------------------------------------------

  if (!config.can_change) { return; }
  var catalogue = config.catalogue;
  var form = document.getElementById("widget-form");
  var toggle = document.getElementById("edit-toggle");
  var save = document.getElementById("save-layout");
  var series = [];

  function setEditing(on) {
    editing = on;
    document.body.classList.toggle("editing", on);
    form.hidden = !on;
    save.hidden = !on;
    toggle.setAttribute("aria-pressed", on ? "true" : "false");
  }
  toggle.addEventListener("click", function () {
    setEditing(!editing);
    if (!editing && typeof resetForm === "function") { resetForm(); }
  });

  function product(device) {
    var d = catalogue.devices.find(function (x) { return x.id === device; });
    return d ? catalogue.products[d.product] : {properties: [], commands: []};
  }

  function option(select, value, text) {
    var o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    select.appendChild(o);
  }

  function fillDevices() {
    [form.elements.device, form.elements.devices].forEach(function (select) {
      select.textContent = "";
      catalogue.devices.forEach(function (d) { option(select, d.id, d.id + (d.name ? " · " + d.name : "")); });
    });
  }

  function fillProperties() {
    var type = form.elements.type.value;
    var select = form.elements.property;
    select.textContent = "";
    product(form.elements.device.value).properties.forEach(function (p) {
      if (type === "gauge" && !p.numeric) { return; }
      if (type === "chart" && !p.chartable) { return; }
      option(select, p.key, p.name + (p.unit ? " (" + p.unit + ")" : "") + " · " + p.key);
    });
    var commands = form.elements.command;
    commands.textContent = "";
    product(form.elements.device.value).commands.forEach(function (c) {
      option(commands, c.key, c.name + " · " + c.key);
    });
    var columns = form.elements.properties;
    columns.textContent = "";
    var seen = {};
    Array.from(form.elements.devices.selectedOptions).forEach(function (o) {
      product(o.value).properties.forEach(function (p) {
        if (!seen[p.key]) { seen[p.key] = true; option(columns, p.key, p.name + " · " + p.key); }
      });
    });
  }

  function showFields() {
    var type = form.elements.type.value;
    form.querySelectorAll("[data-for]").forEach(function (field) {
      field.hidden = field.getAttribute("data-for").split(" ").indexOf(type) < 0;
    });
    fillProperties();
  }

  function drawSeries() {
    var list = document.getElementById("series-list");
    list.textContent = "";
    series.forEach(function (s, n) {
      var li = el("li", "", s.device + " · " + s.service + "." + s.property + " ");
      var x = el("button", "link", L.remove);
      x.type = "button";
      x.addEventListener("click", function () { series.splice(n, 1); drawSeries(); });
      li.appendChild(x);
      list.appendChild(li);
    });
  }

  document.getElementById("add-series").addEventListener("click", function () {
    var key = form.elements.property.value;
    if (!key || series.length >= config.limits.series) { return; }
    var dot = key.indexOf(".");
    series.push({device: form.elements.device.value, service: key.slice(0, dot),
                 property: key.slice(dot + 1)});
    drawSeries();
  });
  form.elements.type.addEventListener("change", showFields);
  form.elements.device.addEventListener("change", fillProperties);
  form.elements.devices.addEventListener("change", fillProperties);

  var SIZES = {chart: [6, 4], gauge: [3, 3], value: [3, 2], map: [4, 3], alarms: [4, 3],
               table: [6, 3], command: [3, 2]};

  function selected(select) {
    return Array.from(select.selectedOptions).map(function (o) { return o.value; });
  }

  function newWidget() {
    var type = form.elements.type.value;
    var size = SIZES[type];
    var bottom = widgets.reduce(function (m, w) { return Math.max(m, w.y + w.h); }, 0);
    var w = {id: "w" + Date.now().toString(36) + Math.floor(Math.random() * 1296).toString(36),
             type: type, title: form.elements.title.value.trim(), x: 0, y: bottom,
             w: size[0], h: size[1]};
    var key = form.elements.property.value || "";
    var dot = key.indexOf(".");
    if (type === "gauge" || type === "value") {
      w.device = form.elements.device.value;
      w.service = key.slice(0, dot);
      w.property = key.slice(dot + 1);
    } else if (type === "chart") {
      w.series = series.slice();
      if (!w.series.length && key) {
        w.series.push({device: form.elements.device.value, service: key.slice(0, dot),
                       property: key.slice(dot + 1)});
      }
      var from = form.elements.from.value;
      var to = form.elements.to.value;
      w.window = from && to ? {from: new Date(from).toISOString(), to: new Date(to).toISOString()}
                            : {hours: Number(form.elements.hours.value) || 24};
    } else if (type === "map" || type === "alarms") {
      w.devices = selected(form.elements.devices);
    } else if (type === "table") {
      w.devices = selected(form.elements.devices);
      w.properties = selected(form.elements.properties);
    } else if (type === "command") {
      var command = form.elements.command.value;
      var cdot = command.indexOf(".");
      w.device = form.elements.device.value;
      w.service = command.slice(0, cdot);
      w.command = command.slice(cdot + 1);
      // Text that is not JSON goes as it is: the server refuses it with the reason.
      try { w.params = JSON.parse(form.elements.params.value || "{}"); } catch (e) { w.params = form.elements.params.value; }
    }
    return w;
  }

  function addMeta(w) {
    // What the widget shows of devices just picked (names, units, ranges).
    [w.device].concat(w.devices || [], (w.series || []).map(function (s) { return s.device; }))
      .forEach(function (device) {
        if (!device || meta[device]) { return; }
        var props = {};
        product(device).properties.forEach(function (p) { props[p.key] = p; });
        meta[device] = {properties: props};
      });
  }

  // Editing a widget in place: the form is filled with it, its type fixed; applying keeps
  // its id and its place on the grid.
  var changing = null;  // {w, node} while a widget is open in the form
  var legend = form.querySelector("legend");
  var submit = form.querySelector("[data-testid=widget-add]");
  var cancel = document.getElementById("widget-cancel");

  function localTime(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return ""; }
    var pad = function (n) { return String(n).padStart(2, "0"); };
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" +
      pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function pick(select, values) {
    Array.from(select.options).forEach(function (o) { o.selected = values.indexOf(o.value) >= 0; });
  }

  function resetForm() {
    changing = null;
    form.elements.type.disabled = false;
    legend.textContent = L.add_widget;
    submit.textContent = L.add;
    cancel.hidden = true;
    series = [];
    drawSeries();
    form.elements.title.value = "";
    document.querySelectorAll(".widget.changing").forEach(function (n) { n.classList.remove("changing"); });
  }

  editHook = function (w, node) {
    resetForm();
    changing = {w: w, node: node};
    node.classList.add("changing");
    form.elements.type.value = w.type;
    form.elements.type.disabled = true;
    showFields();
    form.elements.title.value = w.title || "";
    var device = w.device || (w.series && w.series[0] && w.series[0].device) || "";
    if (device) { form.elements.device.value = device; }
    pick(form.elements.devices, w.devices || []);
    fillProperties();
    if (w.service && w.property) { form.elements.property.value = w.service + "." + w.property; }
    if (w.type === "table") { pick(form.elements.properties, w.properties || []); }
    if (w.type === "command") {
      form.elements.command.value = w.service + "." + w.command;
      form.elements.params.value = typeof w.params === "string" ? w.params : JSON.stringify(w.params || {});
    }
    if (w.type === "chart") {
      series = (w.series || []).map(function (x) { return Object.assign({}, x); });
      drawSeries();
      var win = w.window || {};
      form.elements.hours.value = win.hours || 24;
      form.elements.from.value = win.from ? localTime(win.from) : "";
      form.elements.to.value = win.to ? localTime(win.to) : "";
    }
    legend.textContent = L.edit_widget + " · " + titleOf(w);
    submit.textContent = L.update;
    cancel.hidden = false;
    form.scrollIntoView({block: "nearest"});
  };
  cancel.addEventListener("click", resetForm);

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (changing) {
      var old = changing.w;
      if (widgets.indexOf(old) < 0) { resetForm(); return; }  // removed meanwhile
      var fresh = newWidget();
      if (fresh.type === "chart" && !series.length && !(fresh.series || []).length) {
        fresh.series = old.series;
      }
      fresh.id = old.id;
      fresh.x = old.x; fresh.y = old.y; fresh.w = old.w; fresh.h = old.h;
      addMeta(fresh);
      widgets[widgets.indexOf(old)] = fresh;
      delete views[old.id];
      var oldNode = changing.node;
      var node = render(fresh);
      oldNode.replaceWith(node);
      resetForm();
      markDirty();
      return;
    }
    if (widgets.length >= config.limits.widgets) { return; }
    var w = newWidget();
    addMeta(w);
    widgets.push(w);
    render(w);
    empty();
    series = [];
    drawSeries();
    form.elements.title.value = "";
    markDirty();
  });

  save.addEventListener("click", function () {
    setStatus(L.saving, "saving");
    fetch(config.urls.layout, {
      method: "POST", credentials: "same-origin",
      body: JSON.stringify({widgets: widgets}),
      headers: {"Content-Type": "application/json", "Accept": "application/json",
                "X-CSRFToken": Console.csrfToken()}
    }).then(function (r) {
      return r.json().then(function (b) { return {ok: r.ok, body: b}; });
    }).then(function (result) {
      if (!result.ok) { setStatus(L.error + ": " + (result.body.detail || ""), "error"); return; }
      setStatus(L.saved, "saved");
    }).catch(function (e) { setStatus(L.error + ": " + e.message, "error"); });
  });

  fillDevices();
  showFields();
  setEditing(config.edit);
})();

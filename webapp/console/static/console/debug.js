/* The debug page: the live message stream (filters, pause, clear, bounded buffer), publish,
   simulate, disconnect and broadcast forms. Every text from the server goes in by textContent. */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("debug-config").textContent);
  var L = config.labels;

  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, function (all, name) {
      return values[name] === undefined || values[name] === null ? all : String(values[name]);
    });
  }

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }

  function timeElement(ms) {
    var node = el("time", Console.formatTime(new Date(ms)));
    node.setAttribute("data-local", "");
    node.setAttribute("datetime", new Date(ms).toISOString());
    return node;
  }

  // The stream ---------------------------------------------------------------------------

  var body = document.getElementById("stream-body");
  var stateEl = document.getElementById("live-state");
  var countEl = document.getElementById("line-count");
  var pauseButton = document.getElementById("pause");
  var filterForm = document.getElementById("stream-filters");
  var paused = false;
  var socket = null;

  function setState(name) {
    stateEl.setAttribute("data-state", name);
    stateEl.textContent = L[name];
  }

  function updateCount() {
    var rows = body.querySelectorAll("tr.line").length;
    countEl.textContent = format(L.lines, {count: rows});
  }

  function filters() {
    var values = {};
    new FormData(filterForm).forEach(function (value, name) {
      values[name] = String(value).trim();
    });
    return values;
  }

  function matches(line, wanted) {
    return (!wanted.product || wanted.product === line.product) &&
      (!wanted.device || wanted.device === line.device) &&
      (!wanted.direction || wanted.direction === line.direction) &&
      (!wanted.result || wanted.result === line.result);
  }

  function addLine(line) {
    var empty = body.querySelector("tr.empty");
    if (empty) { empty.remove(); }
    var row = el("tr", null, "line " + (line.result === "rejected" ? "rejected" : ""));
    row.setAttribute("data-device", line.device);
    row.setAttribute("data-product", line.product || "");
    row.setAttribute("data-direction", line.direction);
    row.setAttribute("data-result", line.result);
    var badge = el("span", L.result[line.result] || line.result, "badge " + line.result);
    var payload = el("code", line.payload + (line.truncated ? " " + L.truncated : ""), "payload");
    var cells = [timeElement(line.ts), el("code", line.device), line.product || "—",
      L.direction[line.direction] || line.direction, el("code", line.topic), badge,
      line.reason || "", payload];
    cells.forEach(function (content, index) {
      var td = el("td", null, index === 6 ? "reason" : "");
      if (typeof content === "string") { td.textContent = content; } else { td.appendChild(content); }
      row.appendChild(td);
    });
    body.insertBefore(row, body.firstChild);
    row.classList.add("fresh");
    while (body.rows.length > config.buffer) { body.deleteRow(body.rows.length - 1); }
  }

  function onLines(lines) {
    if (paused) { return; }
    var wanted = filters();
    lines.slice().sort(function (a, b) { return a.ts - b.ts; }).forEach(function (line) {
      if (matches(line, wanted)) { addLine(line); }
    });
    updateCount();
  }

  function sendFilters() {
    if (socket) { socket.send(Object.assign({type: "filter"}, filters())); }
  }

  filterForm.addEventListener("submit", function (event) { event.preventDefault(); });
  filterForm.addEventListener("change", function () {
    // Hide what no longer matches; the server sends only matching lines from now on.
    var wanted = filters();
    body.querySelectorAll("tr.line").forEach(function (row) {
      row.hidden = !matches({
        product: row.getAttribute("data-product"), device: row.getAttribute("data-device"),
        direction: row.getAttribute("data-direction"), result: row.getAttribute("data-result")
      }, wanted);
    });
    sendFilters();
  });

  pauseButton.addEventListener("click", function () {
    paused = !paused;
    pauseButton.textContent = paused ? L.resume : L.pause;
    setState(paused ? "paused" : "live");
  });

  document.getElementById("clear").addEventListener("click", function () {
    body.querySelectorAll("tr.line").forEach(function (row) { row.remove(); });
    updateCount();
  });

  socket = window.Console.liveSocket(config.ws, {
    state: function (name) { setState(name === "live" && paused ? "paused" : name); },
    hello: sendFilters,
    message: function (message) {
      if (message.type === "lines") { onLines(message.lines || []); }
    }
  });
  updateCount();

  // The forms ----------------------------------------------------------------------------

  function show(output, text, ok) {
    output.textContent = text;
    output.className = "command-result " + (ok ? "ok" : "bad");
  }

  var example = document.getElementById("example");
  if (example) {
    example.addEventListener("click", function () {
      var form = example.closest("form");
      var device = form.elements.device.value.trim();
      var product = config.devices[device] || Object.keys(config.examples)[0];
      var text = config.examples[product];
      if (text) {
        form.elements.suffix.value = "datas";
        form.elements.payload.value = text.replace("{device}", device || "device-id");
      }
    });
  }

  var resultsTable = document.getElementById("broadcast-results");

  function renderResults(results) {
    var tbody = resultsTable.tBodies[0];
    tbody.textContent = "";
    results.forEach(function (r) {
      var row = el("tr");
      row.setAttribute("data-device", r.device);
      row.appendChild(el("td")).appendChild(el("code", r.device));
      var status = el("span", L.command[r.status] || r.status_label || r.status,
        "badge cmd-" + r.status);
      status.setAttribute("data-status", r.status);
      row.appendChild(el("td")).appendChild(status);
      var detail = r.error || (r.response ? JSON.stringify(r.response) : "");
      row.appendChild(el("td", detail));
      tbody.appendChild(row);
    });
    resultsTable.hidden = false;
  }

  function follow(results, output) {
    var known = {};
    results.forEach(function (r) { known[r.device] = r; });
    function openIds() {
      return Object.keys(known).filter(function (d) { return known[d].open; })
        .map(function (d) { return known[d].id; });
    }
    function report() {
      var ids = openIds();
      if (ids.length) {
        show(output, format(L.pending_count, {open: ids.length, total: results.length}), true);
        output.removeAttribute("data-done");
      } else {
        show(output, L.done, true);
        output.setAttribute("data-done", "");
      }
      return ids;
    }
    function poll() {
      var ids = openIds();
      if (!ids.length) { return; }
      Console.getJSON(config.status + "?ids=" + ids.join(",")).then(function (body) {
        body.results.forEach(function (r) { known[r.device] = r; });
        renderResults(Object.keys(known).sort().map(function (d) { return known[d]; }));
        if (report().length) { setTimeout(poll, 1000); }
      }).catch(function () { setTimeout(poll, 3000); });
    }
    renderResults(results);
    if (report().length) { setTimeout(poll, 1000); }
  }

  document.querySelectorAll("form.debug-form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var output = form.querySelector("output");
      var kind = form.getAttribute("data-kind");
      show(output, L.sending, true);
      Console.postForm(form).then(function (reply) {
        var b = reply.body;
        if (!reply.ok) { show(output, L.error + ": " + (b.detail || ""), false); return; }
        if (kind === "publish") {
          show(output, format(L.published, {topic: b.topic, bytes: b.bytes}), true);
        } else if (kind === "simulate") {
          show(output, b.accepted ? format(L.accepted, {landed: b.landed})
            : format(L.rejected, {reason: b.reason || ""}), b.accepted);
          output.setAttribute("data-result", b.result);
        } else if (kind === "disconnect") {
          show(output, format(b.online ? L.disconnected : L.offline, {device: b.device}), true);
        } else if (kind === "broadcast") {
          follow(b.results, output);
        }
      }).catch(function (error) { show(output, L.error + ": " + error.message, false); });
    });
  });

  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
})();

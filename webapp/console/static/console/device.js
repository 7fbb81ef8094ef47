/* The device page: live updates over the WebSocket, the telemetry chart and command forms. */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("device-config").textContent);
  var L = config.labels;
  var MAX_LOG_ROWS = 200;
  var chart = {plot: null, key: null, raw: false, data: [[], []]};

  function display(value, datatype) {
    if (value === null || value === undefined) { return "—"; }
    if (typeof value === "boolean") { return value ? L.yes : L.no; }
    if (typeof value === "object") { return JSON.stringify(value); }
    return String(value);
  }

  function timeElement(ms) {
    var el = document.createElement("time");
    el.setAttribute("data-local", "");
    el.setAttribute("datetime", new Date(ms).toISOString());
    el.textContent = Console.formatTime(new Date(ms));
    return el;
  }

  function flash(el) {
    el.classList.remove("fresh");
    void el.offsetWidth;  // restart the animation
    el.classList.add("fresh");
  }

  // Live updates ------------------------------------------------------------------------

  var stateEl = document.getElementById("live-state");
  function setState(name) {
    stateEl.setAttribute("data-state", name);
    stateEl.textContent = L[name];
  }

  function applyPoint(point) {
    Object.keys(point.values).forEach(function (code) {
      var key = point.service + "." + code;
      var row = document.querySelector('tr[data-key="' + CSS.escape(key) + '"]');
      if (row) {
        var cell = row.querySelector("td.value");
        cell.querySelector(".v").textContent = display(point.values[code]);
        cell.querySelector(".unit").hidden = false;
        var ts = row.querySelector("td.ts");
        ts.textContent = "";
        ts.appendChild(timeElement(point.ts));
        flash(cell);
      }
      if (chart.plot && chart.raw && chart.key === key) {
        chart.data[0].push(point.ts / 1000);
        chart.data[1].push(numeric(point.values[code]));
        chart.plot.setData(chart.data);
      }
    });
  }

  function applyStatus(status) {
    var badge = document.getElementById("connect-badge");
    badge.className = "badge " + status.status;
    badge.textContent = L.connect[status.status] || status.status;
    if (status.ts) {
      var seen = document.getElementById("last-seen");
      seen.textContent = "";
      seen.appendChild(timeElement(status.ts));
    }
  }

  function applyLog(message) {
    var table = document.querySelector('table[data-testid="message-log"]');
    var filter = table.getAttribute("data-filter");
    if (filter && message.result !== filter) { return; }
    var body = document.getElementById("log-body");
    var empty = body.querySelector("tr.empty");
    if (empty) { empty.remove(); }
    var row = document.createElement("tr");
    row.className = message.result;
    var cells = [
      timeElement(message.ts), L.direction[message.direction] || message.direction,
      code(message.topic), badge(message.result, L.result[message.result] || message.result),
      message.reason || "", code(message.payload + (message.truncated ? "…" : ""), "payload")
    ];
    cells.forEach(function (content, index) {
      var td = document.createElement("td");
      if (index === 4) { td.className = "reason"; }
      if (typeof content === "string") { td.textContent = content; } else { td.appendChild(content); }
      row.appendChild(td);
    });
    body.insertBefore(row, body.firstChild);
    flash(row);
    while (body.rows.length > MAX_LOG_ROWS) { body.deleteRow(body.rows.length - 1); }
  }

  function code(text, className) {
    var el = document.createElement("code");
    if (className) { el.className = className; }
    el.textContent = text;
    return el;
  }

  function badge(kind, text) {
    var el = document.createElement("span");
    el.className = "badge " + kind;
    el.textContent = text;
    return el;
  }

  function applyUpdate(update) {
    (update.points || []).forEach(applyPoint);
    if (update.status) { applyStatus(update.status); }
    (update.logs || []).forEach(applyLog);
  }

  window.Console.liveSocket(config.ws, {
    state: setState,
    message: function (message) {
      if (message.type === "update") { applyUpdate(message); }
    }
  });

  // Telemetry chart --------------------------------------------------------------------

  var INTERVALS = {3600: null, 21600: "1m", 86400: "5m", 604800: "1h"};
  var chartForm = document.getElementById("chart-form");
  var chartBox = document.getElementById("chart");
  var chartStatus = document.getElementById("chart-status");

  function numeric(value) {
    if (typeof value === "boolean") { return value ? 1 : 0; }
    return typeof value === "number" ? value : null;
  }

  function drawChart(key, rows, raw) {
    var prop = config.properties[key];
    var data = [rows.map(function (r) { return Date.parse(r.ts) / 1000; }),
                rows.map(function (r) { return numeric(r.value); })];
    if (chart.plot) { chart.plot.destroy(); }
    chart = {key: key, raw: raw, data: data, plot: new uPlot({
      width: chartBox.clientWidth || 800,
      height: 300,
      fmtDate: window.Console.chartDate,
      series: [{label: L.time || "Time"}, {label: prop.name + (prop.unit ? " (" + prop.unit + ")" : ""),
                    stroke: "#409eff", width: 2, fill: "rgba(64,158,255,0.08)",
                    points: {show: rows.length < 200}}],
      // One point (a new device) has no span: show five minutes around it, not uPlot's
      // default of years.
      scales: {x: {time: true, range: function (u, min, max) {
        return max - min < 1 ? [min - 300, max + 300] : [min, max];
      }}},
      axes: [{}, {size: 60}]
    }, data, chartBox)};
  }

  function loadChart() {
    var key = chartForm.elements.property.value;
    if (!key) { return; }
    var prop = config.properties[key];
    var seconds = Number(chartForm.elements.range.value);
    var end = new Date(Date.now() + 1000);
    var start = new Date(end.getTime() - seconds * 1000);
    var params = new URLSearchParams({service: prop.service, property: prop.code,
                                      start: start.toISOString(), end: end.toISOString(),
                                      limit: "5000"});
    var interval = INTERVALS[seconds];
    if (interval) { params.set("interval", interval); params.set("agg", "avg"); }
    // Calendar intervals (1d, 1w, 1M) cut at midnights of the user's own time zone (My
    // settings), else of the browser's.
    var zone = document.documentElement.getAttribute("data-tz") ||
      Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (interval && zone) { params.set("tz", zone); }
    chartStatus.textContent = L.loading;
    Console.getJSON(config.telemetry + "?" + params.toString()).then(function (body) {
      var rows = body.results || [];
      chartStatus.textContent = rows.length ? L.points.replace("{count}", rows.length) : L.empty;
      chartStatus.setAttribute("data-count", String(rows.length));
      drawChart(key, rows, !interval);
    }).catch(function (error) {
      chartStatus.textContent = L.failed + " " + error.message;
    });
  }

  if (chartForm) {
    chartForm.addEventListener("submit", function (event) { event.preventDefault(); loadChart(); });
    chartForm.elements.property.addEventListener("change", loadChart);
    chartForm.elements.range.addEventListener("change", loadChart);
    window.addEventListener("resize", function () {
      if (chart.plot) { chart.plot.setSize({width: chartBox.clientWidth, height: 300}); }
    });
    loadChart();
  }

  // Commands ---------------------------------------------------------------------------

  Console.commandForms(document, L);
})();

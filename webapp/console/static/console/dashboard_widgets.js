/* Dashboards: what the product dashboard and custom dashboards share — gauges, state
   timelines, value text, the live socket. Data is always written with textContent. */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";

  function svg(name, attrs) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function display(value, labels) {
    if (value === null || value === undefined) { return "—"; }
    if (typeof value === "boolean") { return value ? labels.yes : labels.no; }
    if (typeof value === "object") { return JSON.stringify(value); }
    if (typeof value === "number" && !Number.isInteger(value)) {
      return String(Math.round(value * 1000) / 1000);
    }
    return String(value);
  }

  function arcPoint(cx, cy, r, fraction) {
    var angle = Math.PI * (1 - fraction);  // 180° (left) to 0° (right)
    return [cx + r * Math.cos(angle), cy - r * Math.sin(angle)];
  }

  /* A half-circle gauge in `box` between min and max; returns set(value). */
  function gauge(box, min, max) {
    var root = svg("svg", {viewBox: "0 0 200 115", "class": "gauge-svg"});
    var track = svg("path", {"class": "gauge-track", d: "M 20 100 A 80 80 0 0 1 180 100"});
    var fill = svg("path", {"class": "gauge-fill", d: ""});
    var lo = svg("text", {x: 20, y: 113, "class": "gauge-tick", "text-anchor": "middle"});
    var hi = svg("text", {x: 180, y: 113, "class": "gauge-tick", "text-anchor": "middle"});
    lo.textContent = String(min);
    hi.textContent = String(max);
    [track, fill, lo, hi].forEach(function (n) { root.appendChild(n); });
    box.textContent = "";
    box.appendChild(root);
    return function set(value) {
      if (typeof value !== "number" || !(max > min)) { fill.setAttribute("d", ""); return; }
      var fraction = Math.max(0, Math.min(1, (value - min) / (max - min)));
      var end = arcPoint(100, 100, 80, fraction);
      fill.setAttribute("d", "M 20 100 A 80 80 0 0 1 " + end[0].toFixed(2) + " " +
                        end[1].toFixed(2));
      fill.setAttribute("data-fraction", fraction.toFixed(3));
    };
  }

  var STATE_COLOURS = ["#409eff", "#67c23a", "#e6a23c", "#f56c6c", "#909399", "#9b59b6",
                       "#1abc9c", "#d35400"];

  /* Segments of a state over [start, end] (ms) from points [[ms, value]…]. */
  function timeline(bar, legend, points, start, end, labels) {
    bar.textContent = "";
    legend.textContent = "";
    var colours = {};
    var span = Math.max(1, end - start);
    points.forEach(function (point, index) {
      var from = Math.max(point[0], start);
      var to = index + 1 < points.length ? points[index + 1][0] : end;
      if (to <= from) { return; }
      var text = display(point[1], labels);
      if (!(text in colours)) {
        colours[text] = STATE_COLOURS[Object.keys(colours).length % STATE_COLOURS.length];
      }
      var part = document.createElement("span");
      part.className = "segment";
      part.style.left = ((from - start) / span * 100) + "%";
      part.style.width = ((to - from) / span * 100) + "%";
      part.style.background = colours[text];
      part.title = text + " · " + Console.formatTime(new Date(from));
      part.setAttribute("data-state", text);
      bar.appendChild(part);
    });
    Object.keys(colours).forEach(function (text) {
      var item = document.createElement("span");
      var swatch = document.createElement("i");
      swatch.style.background = colours[text];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(" " + text + " "));
      legend.appendChild(item);
    });
  }

  /* The console's reconnecting WebSocket (console.js) with hello/update/state callbacks. */
  function socket(path, handlers) {
    return window.Console.liveSocket(path, {
      state: handlers.state,
      hello: handlers.hello,
      message: function (message) {
        if (message.type === "update") { handlers.update(message); }
      }
    });
  }

  function liveState(labels) {
    var el = document.getElementById("live-state");
    return function (name) {
      if (!el) { return; }
      el.setAttribute("data-state", name);
      el.textContent = labels[name];
    };
  }

  function alarmItems(list, alarms, labels) {
    list.textContent = "";
    if (!alarms.length) {
      var none = document.createElement("li");
      none.className = "muted";
      none.textContent = labels.no_alarms;
      list.appendChild(none);
      return;
    }
    alarms.forEach(function (alarm) {
      var li = document.createElement("li");
      var badge = document.createElement("span");
      badge.className = "badge severity-" + alarm.severity;
      badge.textContent = alarm.severity_label;
      li.appendChild(badge);
      li.appendChild(document.createTextNode(" " + alarm.name + (alarm.device ? " · " +
        alarm.device : "") + (alarm.message ? " — " + alarm.message : "") + " "));
      var status = document.createElement("span");
      status.className = "muted";
      status.textContent = "(" + alarm.status_label + ")";
      li.appendChild(status);
      list.appendChild(li);
    });
  }

  window.Widgets = {display: display, gauge: gauge, timeline: timeline, socket: socket,
                    liveState: liveState, alarmItems: alarmItems, svg: svg};
})();

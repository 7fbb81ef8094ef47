/* The dashboard generated from a product's thing model, for one device: gauges, readings,
   state timelines, daily counters, commands and open alarms, live over the device socket. */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("product-dashboard-config").textContent);
  var L = config.labels;
  var W = window.Widgets;
  var gauges = {};
  var timelines = {};
  var DAY_MS = 86400000;

  document.querySelectorAll(".pd-tile.gauge").forEach(function (tile) {
    gauges[tile.getAttribute("data-key")] = W.gauge(
      tile.querySelector(".gauge-dial"), Number(tile.getAttribute("data-min")),
      Number(tile.getAttribute("data-max")));
  });

  function show(key, value) {
    document.querySelectorAll('[data-key="' + CSS.escape(key) + '"] .v').forEach(function (el) {
      el.textContent = W.display(value, L);
      var tile = el.closest(".pd-tile, .pd-counter, .pd-timeline");
      if (tile) {
        tile.classList.remove("fresh");
        void tile.offsetWidth;
        tile.classList.add("fresh");
      }
    });
    if (gauges[key]) { gauges[key](value); }
  }

  // Latest values of the page.
  Object.keys(config.latest || {}).forEach(function (service) {
    Object.keys(config.latest[service]).forEach(function (code) {
      show(service + "." + code, config.latest[service][code].value);
    });
  });

  // State timelines of the last 24 hours.
  function loadTimelines() {
    var states = config.panels.state;
    if (!states.length) { return; }
    var params = new URLSearchParams({hours: "24"});
    states.slice(0, 8).forEach(function (p) {
      params.append("s", config.device + ":" + p.key);
    });
    Console.getJSON(config.series + "?" + params.toString()).then(function (body) {
      var start = Date.parse(body.start);
      body.series.forEach(function (series) {
        var key = series.service + "." + series.property;
        timelines[key] = {points: series.points, start: start};
        draw(key);
      });
    }).catch(function () { /* the values still show */ });
  }

  function draw(key) {
    var box = document.querySelector('.pd-timeline[data-key="' + CSS.escape(key) + '"]');
    var t = timelines[key];
    if (!box || !t) { return; }
    var end = Date.now();
    t.start = Math.max(t.start, end - DAY_MS);
    W.timeline(box.querySelector(".pd-timeline-bar"), box.querySelector(".pd-timeline-legend"),
               t.points, t.start, end, L);
    box.setAttribute("data-count", String(t.points.length));
  }

  // Daily increases of the counters, by the viewer's local days.
  function loadCounters() {
    if (!config.panels.counter.length) { return; }
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    var params = new URLSearchParams({device: config.device, days: "7", tz: zone});
    Console.getJSON(config.counters + "?" + params.toString()).then(function (body) {
      body.results.forEach(function (result) {
        var box = document.querySelector('.pd-counter[data-key="' + CSS.escape(result.key) + '"]');
        if (!box) { return; }
        var tbody = box.querySelector("tbody");
        tbody.textContent = "";
        result.days.slice().reverse().forEach(function (day) {
          var tr = document.createElement("tr");
          var a = document.createElement("td");
          var b = document.createElement("td");
          a.textContent = day.day;
          b.textContent = W.display(day.delta, L);
          tr.appendChild(a);
          tr.appendChild(b);
          tbody.appendChild(tr);
        });
        box.setAttribute("data-days", String(result.days.length));
      });
    }).catch(function () { /* shown empty */ });
  }

  function loadAlarms() {
    var list = document.getElementById("alarm-list");
    if (!config.alarms || !list) { return; }
    Console.getJSON(config.alarms + "?d=" + encodeURIComponent(config.device))
      .then(function (body) { W.alarmItems(list, body.alarms, L); })
      .catch(function () { /* keep the list shown */ });
  }

  // Live values.
  var setState = W.liveState(L);
  W.socket(config.ws, {
    state: setState,
    update: function (update) {
      (update.points || []).forEach(function (point) {
        Object.keys(point.values).forEach(function (code) {
          var key = point.service + "." + code;
          show(key, point.values[code]);
          if (timelines[key]) {
            timelines[key].points.push([point.ts, point.values[code]]);
            draw(key);
          }
        });
      });
      if (update.status) {
        var badge = document.getElementById("connect-badge");
        badge.className = "badge " + update.status.status;
        badge.textContent = L.connect[update.status.status] || update.status.status;
      }
      if ((update.points || []).length && config.panels.counter.length) { loadCounters(); }
    }
  });

  loadTimelines();
  loadCounters();
  setInterval(loadAlarms, 30000);

  // Commands, posted to the device page's view.
  Console.commandForms(document, L);
})();

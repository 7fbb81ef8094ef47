/* The big screen (/bigscreen/): polls its JSON every data-refresh seconds and updates the
   figures in place; keeps the last figures with a stale marker while the server is away and
   retries; says so when the session ended instead of breaking. The map is TLMap (map.js).
   Every text from the server is set with textContent. */
(function () {
  "use strict";

  var root = document.getElementById("bigscreen");
  if (!root) { return; }
  var labels = JSON.parse(document.getElementById(root.getAttribute("data-labels")).textContent);
  var url = root.getAttribute("data-url");
  var refresh = Math.max(5, parseInt(root.getAttribute("data-refresh"), 10) || 30) * 1000;
  var retry = Math.min(refresh, 10000);
  var state = root.querySelector("[data-bs-state]");
  var alertBox = root.querySelector("[data-bs-alert]");
  var alertText = root.querySelector("[data-bs-alert-text]");
  var loginLink = root.querySelector("[data-bs-login]");
  var updated = root.querySelector("[data-bs-updated]");
  var lastGood = new Date();
  var timer = null;
  var stopped = false;
  var polls = 0;

  function lang() { return document.documentElement.lang || undefined; }
  function clockText(d) { return d.toLocaleTimeString(lang()); }
  function node(tag, className, text) {
    var n = document.createElement(tag);
    if (className) { n.className = className; }
    if (text !== undefined && text !== null) { n.textContent = String(text); }
    return n;
  }
  function pick(data, path) {
    return path.split(".").reduce(function (o, k) { return o == null ? o : o[k]; }, data);
  }
  function severityClass(s) { return "severity-" + String(s).replace(/[^a-z]/g, ""); }

  var map = null;
  var mapBox = root.querySelector("[data-bs-map]");
  if (mapBox && window.TLMap) {
    map = window.TLMap.mount(mapBox, {fit: "first"});
  }

  var spark = root.querySelector("[data-bs-spark]");
  function drawSeries(series) {
    if (!spark || !series) { return; }
    var top = Math.max.apply(null, series.concat([1]));
    spark.textContent = "";
    series.forEach(function (n) {
      var bar = node("span", n ? "" : "zero");
      bar.style.height = Math.max(4, Math.round(100 * n / top)) + "%";
      bar.title = String(n);
      spark.appendChild(bar);
    });
  }
  var initial = document.getElementById("bigscreen-series");
  if (initial) { drawSeries(JSON.parse(initial.textContent)); }

  function render(data) {
    drawSeries(data.messages && data.messages.series);
    root.querySelectorAll("[data-field]").forEach(function (el) {
      var value = pick(data, el.getAttribute("data-field"));
      if (value !== undefined && value !== null) { el.textContent = String(value); }
    });
    var levels = root.querySelector("[data-bs-levels]");
    if (levels && data.alarms) {
      levels.textContent = "";
      data.alarms.levels.forEach(function (a) {
        var span = node("span", "bs-level " + severityClass(a.severity));
        span.setAttribute("data-level", a.severity);
        span.appendChild(node("span", null, a.label));
        span.appendChild(document.createTextNode(" "));
        var b = node("b", null, a.count);
        b.setAttribute("data-testid", "bs-alarms-" + a.severity);
        span.appendChild(b);
        levels.appendChild(span);
      });
    }
    var alarms = root.querySelector("[data-bs-alarms]");
    if (alarms && data.alarms) {
      alarms.textContent = "";
      data.alarms.latest.forEach(function (a) {
        var li = node("li", severityClass(a.severity));
        li.appendChild(node("span", "bs-alarm-level", a.severity_label));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(node("span", "bs-alarm-name", a.name));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(node("span", "bs-alarm-device", a.device_name || a.device || a.product));
        if (a.message) { li.title = a.message; }
        alarms.appendChild(li);
      });
      if (!data.alarms.latest.length) { alarms.appendChild(node("li", "bs-empty", labels.noAlarms)); }
    }
    var products = root.querySelector("[data-bs-products]");
    if (products) {
      products.textContent = "";
      data.top_products.forEach(function (p) {
        var li = node("li");
        li.appendChild(node("span", "bs-product-name", p.name || p.id));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(node("span", "bs-product-count", p.devices));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(node("span", "bs-product-online", labels.online.replace("{count}", p.online)));
        products.appendChild(li);
      });
      if (!data.top_products.length) { products.appendChild(node("li", "bs-empty", labels.noProducts)); }
    }
  }

  function fresh() {
    root.classList.remove("stale");
    alertBox.hidden = true;
    state.textContent = "";
    updated.textContent = labels.updated.replace("{time}", clockText(lastGood));
  }

  function stale() {
    root.classList.add("stale");
    state.textContent = labels.stale.replace("{time}", clockText(lastGood));
  }

  function ended(text) {
    stopped = true;
    root.classList.add("stale", "ended");
    state.textContent = "";
    alertText.textContent = text;
    loginLink.hidden = false;
    alertBox.hidden = false;
  }

  function schedule(ms) { clearTimeout(timer); if (!stopped) { timer = setTimeout(poll, ms); } }

  function poll() {
    fetch(url, {credentials: "same-origin", cache: "no-store",
                headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (response.status === 401) { ended(labels.signedOut); return null; }
        if (response.status === 403) { ended(labels.forbidden); return null; }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        if (!data) { return; }
        lastGood = new Date();
        render(data);
        fresh();
        polls++;
        root.setAttribute("data-polls", String(polls));
        if (map) { map.reload().catch(function () { /* keeps the markers shown */ }); }
        schedule(refresh);
      })
      .catch(function () { stale(); schedule(retry); });
  }

  // The clock, and full screen through the Fullscreen API.
  var clock = root.querySelector("[data-bs-clock]");
  function tick() { clock.textContent = clockText(new Date()); }
  tick();
  setInterval(tick, 1000);
  var fullscreen = root.querySelector("[data-bs-fullscreen]");
  if (fullscreen) {
    if (!document.documentElement.requestFullscreen) { fullscreen.hidden = true; }
    fullscreen.addEventListener("click", function () {
      if (document.fullscreenElement) { document.exitFullscreen(); }
      else { document.documentElement.requestFullscreen().catch(function () { /* refused */ }); }
    });
    document.addEventListener("fullscreenchange", function () {
      fullscreen.textContent = document.fullscreenElement ? labels.exitFullscreen : labels.fullscreen;
      if (map) { setTimeout(function () { map.invalidate(); }, 200); }
    });
  }

  updated.textContent = labels.updated.replace("{time}", clockText(lastGood));
  schedule(refresh);
})();

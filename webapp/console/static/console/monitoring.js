/* The monitoring page: asks /monitoring/data.json every few seconds and puts its panels in
   place; when a refresh fails the figures stay, marked stale, until one succeeds again. */
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("monitoring-config").textContent);
  var panels = document.getElementById("monitoring-panels");
  var state = document.getElementById("live-state");
  var refreshed = document.getElementById("refreshed");
  var timer = null;
  var busy = false;

  function mark(live, when) {
    state.setAttribute("data-state", live ? "live" : "stale");
    state.textContent = live ? config.labels.live : config.labels.stale;
    panels.classList.toggle("stale", !live);
    if (when) {
      refreshed.textContent = config.labels.updated.replace(
        "{time}", window.Console.formatTime(when));
    }
  }

  function refresh() {
    if (busy) { return; }
    busy = true;
    window.Console.getJSON(config.url).then(function (body) {
      panels.innerHTML = body.html;
      window.Console.localiseTimes(panels);
      mark(true, new Date(body.time * 1000));
    }).catch(function () {
      mark(false, null);
    }).then(function () { busy = false; });
  }

  window.Console.localiseTimes(panels);
  mark(true, new Date());
  timer = window.setInterval(refresh, config.every);
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      window.clearInterval(timer);
    } else {
      refresh();
      timer = window.setInterval(refresh, config.every);
    }
  });
})();

/* The monitoring page: asks /monitoring/data.json every few seconds and puts its panels in
   place; when a refresh fails the figures stay, marked stale, until one succeeds again. When
   the session has ended (the answer is the login page) or the permission was withdrawn (403)
   it stops asking and says so. */
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("monitoring-config").textContent);
  var panels = document.getElementById("monitoring-panels");
  var state = document.getElementById("live-state");
  var refreshed = document.getElementById("refreshed");
  var timer = null;
  var busy = false;
  var ended = false;

  function mark(live, when) {
    state.setAttribute("data-state", live ? "live" : "stale");
    state.textContent = live ? config.labels.live : config.labels.stale;
    panels.classList.toggle("stale", !live);
    if (when) {
      refreshed.textContent = config.labels.updated.replace(
        "{time}", window.Console.formatTime(when));
    }
  }

  function end() {
    ended = true;
    window.clearInterval(timer);
    state.setAttribute("data-state", "refused");
    state.textContent = config.labels.ended;
    panels.classList.add("stale");
    var link = document.createElement("a");
    link.href = config.login + "?next=" + encodeURIComponent(location.pathname);
    link.textContent = config.labels.sign_in;
    refreshed.textContent = "";
    refreshed.appendChild(link);
  }

  function refresh() {
    if (busy || ended) { return; }
    busy = true;
    fetch(config.url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (response.status === 401 || response.status === 403 ||
            (response.redirected && response.url.indexOf(config.login) !== -1)) {
          end();
          return;
        }
        if (!response.ok) { throw new Error(response.statusText); }
        return response.json().then(function (body) {
          panels.innerHTML = body.html;
          window.Console.localiseTimes(panels);
          mark(true, new Date(body.time * 1000));
        });
      })
      .catch(function () { mark(false, null); })
      .then(function () { busy = false; });
  }

  window.Console.localiseTimes(panels);
  mark(true, new Date());
  timer = window.setInterval(refresh, config.every);
  document.addEventListener("visibilitychange", function () {
    if (ended) { return; }
    window.clearInterval(timer);
    if (!document.hidden) {
      refresh();
      timer = window.setInterval(refresh, config.every);
    }
  });
})();

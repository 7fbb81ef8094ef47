/* Console-wide behaviour: times in the user's zone, the language switch, and a CSRF-aware fetch. */
(function () {
  "use strict";

  function pad(n) { return String(n).padStart(2, "0"); }

  // The user's own time zone (My settings) when they chose one, else the browser's.
  var zoneParts = null;
  try {
    var zone = document.documentElement.getAttribute("data-tz");
    if (zone) {
      zoneParts = new Intl.DateTimeFormat("en-GB", {
        timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
        minute: "2-digit", second: "2-digit", hourCycle: "h23"});
    }
  } catch (error) { zoneParts = null; }

  function formatTime(date) {
    if (zoneParts) {
      var p = {};
      zoneParts.formatToParts(date).forEach(function (part) { p[part.type] = part.value; });
      return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" +
        p.second;
    }
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      " " + pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
  }

  function localiseTimes(root) {
    (root || document).querySelectorAll("time[data-local][datetime]").forEach(function (el) {
      var value = el.getAttribute("datetime");
      if (!value) { return; }
      var date = new Date(value);
      if (!isNaN(date.getTime())) {
        el.textContent = formatTime(date);
        el.title = date.toISOString();
      }
    });
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function postForm(form) {
    return fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: {"Accept": "application/json", "X-CSRFToken": csrfToken()}
    }).then(function (response) {
      return response.json().then(function (body) { return {ok: response.ok, body: body}; });
    });
  }

  function getJSON(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) { throw new Error(body.detail || response.statusText); }
          return body;
        });
      });
  }

  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-autosubmit]")) { event.target.form.submit(); }
  });
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details.user-menu[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) { menu.removeAttribute("open"); }
    });
  });
  localiseTimes(document);

  /* uPlot's `fmtDate`: the console's 24-hour, year-month-day dates instead of uPlot's
     US ones ("12/6/26", "4:40am"), in every language. */
  function chartDate(tpl) {
    var fixed = tpl.replace(/\{M\}\/\{D\}\/\{YY\}/g, "{MM}-{DD}")
      .replace(/\{M\}\/\{D\}/g, "{MM}-{DD}")
      .replace(/\{h\}\{aa\}/g, "{HH}:00")
      .replace(/\{h\}/g, "{HH}").replace(/\{aa\}/g, "");
    return window.uPlot.fmtDate(fixed);
  }

  window.Console = {formatTime: formatTime, localiseTimes: localiseTimes, csrfToken: csrfToken,
                    postForm: postForm, getJSON: getJSON, chartDate: chartDate};
})();

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

  /* A console WebSocket that reconnects with a doubling delay (1 s up to 30 s) and gives up
     when the server refuses it (4401 signed out, 4403 no permission). `handlers.state` gets
     "live" after each hello, "reconnecting" and "refused"; `handlers.message` every other
     message (parsed). Returns {send}: a JSON message sent when the socket is open. */
  function liveSocket(path, handlers) {
    var retry = 1000;
    var current = null;
    function connect() {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var ws = new WebSocket(scheme + location.host + path);
      current = ws;
      ws.onmessage = function (event) {
        var message = JSON.parse(event.data);
        if (message.type === "hello") {
          retry = 1000;
          handlers.state("live");
          if (handlers.hello) { handlers.hello(message); }
        } else {
          handlers.message(message);
        }
      };
      ws.onclose = function (event) {
        if (event.code === 4401 || event.code === 4403) { handlers.state("refused"); return; }
        handlers.state("reconnecting");
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 30000);
      };
    }
    connect();
    return {
      send: function (message) {
        if (current && current.readyState === WebSocket.OPEN) {
          current.send(JSON.stringify(message));
          return true;
        }
        return false;
      }
    };
  }

  /* Command forms (`form.command-form` with an <output>): posted as JSON, then the command
     is followed every second until it leaves pending/sent or its timeout passes. `labels`:
     sending, error and command[status]. */
  function showCommand(output, command, labels) {
    var text = labels.command[command.status] || command.status;
    if (command.response && Object.keys(command.response).length) {
      text += " · " + JSON.stringify(command.response);
    }
    if (command.error) { text += " · " + command.error; }
    output.textContent = text;
    output.setAttribute("data-status", command.status);
  }

  function followCommand(output, command, deadline, labels) {
    if (command.status !== "pending" && command.status !== "sent") { return; }
    if (!command.url || Date.now() > deadline) { return; }
    setTimeout(function () {
      getJSON(command.url).then(function (latest) {
        latest.url = command.url;
        showCommand(output, latest, labels);
        followCommand(output, latest, deadline, labels);
      }).catch(function () { /* no permission to read commands: keep the first answer */ });
    }, 1000);
  }

  function commandForms(root, labels) {
    root.querySelectorAll("form.command-form").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var output = form.querySelector("output");
        output.textContent = labels.sending;
        output.removeAttribute("data-status");
        postForm(form).then(function (result) {
          if (!result.ok) {
            output.textContent = labels.error + ": " + (result.body.detail || "");
            output.setAttribute("data-status", "refused");
            return;
          }
          showCommand(output, result.body, labels);
          followCommand(output, result.body, Date.now() + ((result.body.timeout || 30) + 5) * 1000,
                        labels);
        }).catch(function (error) {
          output.textContent = labels.error + ": " + error.message;
        });
      });
    });
  }

  window.Console = {formatTime: formatTime, localiseTimes: localiseTimes, csrfToken: csrfToken,
                    postForm: postForm, getJSON: getJSON, chartDate: chartDate,
                    liveSocket: liveSocket, commandForms: commandForms};
})();

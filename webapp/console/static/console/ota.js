/* OTA campaign page: refresh the totals and each device's row from the progress JSON every
   5 s while the campaign is a draft or running. Text only (textContent), never markup. */
(function () {
  "use strict";

  var card = document.querySelector("[data-progress-url]");
  if (!card || card.getAttribute("data-live") !== "1") { return; }
  var url = card.getAttribute("data-progress-url");
  var state = card.querySelector("[data-progress-state]");
  var statusBadge = document.querySelector("[data-campaign-status]");
  var timer = null;

  function setTime(cell, value) {
    cell.textContent = "";
    if (!value) { cell.textContent = "—"; return; }
    var time = document.createElement("time");
    time.setAttribute("data-local", "");
    time.setAttribute("datetime", value);
    time.textContent = value;
    cell.appendChild(time);
  }

  function setBadge(cell, status, label) {
    cell.textContent = "";
    var badge = document.createElement("span");
    badge.className = "badge task-" + status;
    badge.textContent = label;
    cell.appendChild(badge);
  }

  function updateRow(row, task) {
    setBadge(row.querySelector('[data-field="status"]'), task.status, task.status_label);
    var bar = row.querySelector('[data-field="progress"] .progress-bar > span');
    if (bar) { bar.style.width = Math.max(0, Math.min(100, Number(task.progress) || 0)) + "%"; }
    row.querySelector("[data-progress-text]").textContent = task.progress + " %";
    row.querySelector('[data-field="attempts"]').textContent = String(task.attempts);
    row.querySelector('[data-field="error"]').textContent = task.error || "";
    setTime(row.querySelector('[data-field="sent"]'), task.sent);
    setTime(row.querySelector('[data-field="finished"]'), task.finished);
    setTime(row.querySelector('[data-field="updated"]'), task.updated);
  }

  function apply(body) {
    Object.keys(body.summary).forEach(function (key) {
      var cell = card.querySelector('[data-total="' + key + '"]');
      if (cell) { cell.textContent = String(body.summary[key]); }
    });
    var done = card.querySelector("[data-done-bar]");
    if (done) {
      done.style.width = body.done_percent + "%";
      done.parentNode.setAttribute("aria-valuenow", String(body.done_percent));
    }
    body.tasks.forEach(function (task) {
      var row = card.querySelector('tr[data-task="' + Number(task.id) + '"]');
      if (row) { updateRow(row, task); }
    });
    if (statusBadge) {
      statusBadge.className = "badge ota-" + body.status;
      statusBadge.textContent = body.status_label;
    }
    window.Console.localiseTimes(card);
    if (body.status !== "draft" && body.status !== "running") {
      window.clearInterval(timer);
      if (state) { state.textContent = ""; }
    }
  }

  function poll() {
    window.Console.getJSON(url).then(apply).catch(function () {
      if (state) {
        state.textContent = card.getAttribute("data-failed-text");
        state.setAttribute("data-state", "refused");
      }
    });
  }

  if (state) { state.setAttribute("data-state", "live"); }
  timer = window.setInterval(poll, 5000);
})();

/* Alarms list: "select all" and the count of checked alarms for the bulk bar. */
(function () {
  "use strict";

  var all = document.querySelector("[data-select-all]");
  var counter = document.querySelector("[data-bulk-count]");
  var boxes = function () {
    return document.querySelectorAll('input[type=checkbox][name=ids][form="alarm-bulk"]');
  };

  function refresh() {
    if (!counter) { return; }
    var checked = 0;
    boxes().forEach(function (box) { if (box.checked) { checked += 1; } });
    counter.textContent = String(checked);
  }

  if (all) {
    all.addEventListener("change", function () {
      boxes().forEach(function (box) { box.checked = all.checked; });
      refresh();
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches('input[name=ids][form="alarm-bulk"]')) { refresh(); }
  });
  refresh();
})();

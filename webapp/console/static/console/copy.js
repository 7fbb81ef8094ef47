/* Copy buttons: a button with data-copy puts its text on the clipboard. */
(function () {
  "use strict";
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var label = button.textContent;
      navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
        button.textContent = "\u2713";
        setTimeout(function () { button.textContent = label; }, 1500);
      });
    });
  });
})();

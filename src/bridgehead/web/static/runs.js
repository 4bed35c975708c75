/* Runs table: "select all" and a Compare button that counts the selected runs.
 * Without this file the page still works: the checkboxes submit with the Compare form (form="compare-form").
 */
(function () {
  "use strict";

  var form = document.getElementById("compare-form");
  if (!form) {
    return;
  }
  var button = form.querySelector("button[type=submit]");
  var all = document.getElementById("select-all");

  function boxes() {
    return Array.prototype.slice.call(document.querySelectorAll('input[name="ids"][form="compare-form"]'));
  }

  function update() {
    var picked = boxes().filter(function (b) {
      return b.checked;
    }).length;
    button.disabled = picked < 2;
    button.textContent = picked >= 2 ? "Compare " + picked + " runs" : "Compare runs";
    button.title = picked >= 2 ? "" : "Select two or more runs to compare";
    if (all) {
      all.checked = picked > 0 && picked === boxes().length;
      all.indeterminate = picked > 0 && picked < boxes().length;
    }
    boxes().forEach(function (b) {
      var row = b.closest("tr");
      if (row) {
        row.classList.toggle("row-selected", b.checked);
      }
    });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target === all) {
      boxes().forEach(function (b) {
        b.checked = all.checked;
      });
    }
    if (target === all || (target.name === "ids" && target.getAttribute("form") === "compare-form")) {
      update();
    }
  });
  if (all) {
    all.hidden = false;
  }
  update();
})();

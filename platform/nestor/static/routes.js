// Narrows the /routes table as you type: rows whose text lacks the query are hidden.
"use strict";
(function () {
  const box = document.getElementById("route-filter");
  if (!box) return;
  const rows = Array.from(document.querySelectorAll("tr[data-route]"));
  const count = document.getElementById("route-count");
  function apply() {
    const needle = box.value.trim().toLowerCase();
    let shown = 0;
    for (const row of rows) {
      const hit = !needle || row.dataset.route.includes(needle);
      row.classList.toggle("hidden", !hit);
      if (hit) shown += 1;
    }
    for (const group of document.querySelectorAll("section[data-group]")) {
      const visible = group.querySelectorAll("tr[data-route]:not(.hidden)").length;
      group.hidden = visible === 0;
    }
    if (count) count.textContent = String(shown);
  }
  box.addEventListener("input", apply);
  apply();
})();

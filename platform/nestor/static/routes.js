// Narrows the /routes tables as you type: rows whose text lacks the query are hidden,
// and so are groups left with no row. Without JavaScript the form filters on the server.
"use strict";
(function () {
  const box = document.getElementById("route-filter");
  if (!box) return;
  const rows = Array.from(document.querySelectorAll("tr[data-route]"));
  const groups = Array.from(document.querySelectorAll("section[data-group]"));
  const count = document.getElementById("route-count");
  const empty = document.getElementById("route-empty");
  const emptyQuery = document.getElementById("route-empty-query");
  function apply() {
    const needle = box.value.trim().toLowerCase();
    let shown = 0;
    for (const row of rows) {
      const hit = !needle || row.dataset.route.includes(needle);
      row.classList.toggle("hidden", !hit);
      if (hit) shown += 1;
    }
    for (const group of groups) {
      group.hidden = group.querySelector("tr[data-route]:not(.hidden)") === null;
    }
    if (count) count.textContent = String(shown);
    if (empty) empty.hidden = shown > 0;
    if (emptyQuery) emptyQuery.textContent = box.value.trim();
  }
  box.addEventListener("input", apply);
  apply();
})();

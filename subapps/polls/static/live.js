// Live results: GET /polls/{id}/live sends the counts now and after every vote.
"use strict";

(function () {
  const section = document.getElementById("results");
  if (!section || !("WebSocket" in window)) {
    return;
  }
  const status = document.getElementById("live-status");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let delay = 1000;

  function show(counts) {
    document.getElementById("total").textContent = String(counts.total);
    for (const choice of counts.choices) {
      const bar = document.getElementById("bar-" + choice.id);
      const votes = document.getElementById("votes-" + choice.id);
      const percent = document.getElementById("percent-" + choice.id);
      if (bar) {
        bar.max = Math.max(counts.total, 1);
        bar.value = choice.votes;
      }
      if (votes) {
        votes.textContent = String(choice.votes);
      }
      if (percent) {
        percent.textContent = String(counts.total ? Math.round((100 * choice.votes) / counts.total) : 0);
      }
    }
  }

  function connect() {
    const socket = new WebSocket(scheme + "//" + location.host + section.dataset.live);
    socket.addEventListener("open", () => {
      delay = 1000;
      status.textContent = "Live: new votes appear as they come.";
      status.classList.add("on");
    });
    socket.addEventListener("message", (event) => show(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      status.textContent = "Reconnecting…";
      status.classList.remove("on");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }

  connect();
})();

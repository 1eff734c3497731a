// Live monitor: GET /monitor/ws sends each target's last check (with its uptime) and the recent
// state changes, then every check and change; what the page already shows is skipped (by id).
// Served from /monitor/static so the pages keep to the kernel's CSP (no inline script).
"use strict";

(function () {
  const section = document.getElementById("monitor");
  if (!section || !("WebSocket" in window)) {
    return;
  }
  const status = document.getElementById("live-status");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const SVG = "http://www.w3.org/2000/svg";
  let delay = 1000;

  function latency(ms) {
    return ms === null ? "–" : Math.round(ms) + " ms";
  }

  function percent(value) {
    return value === null ? "–" : value.toFixed(2) + " %";
  }

  function when(iso) {
    const time = document.createElement("time");
    time.dateTime = iso;
    time.textContent = new Date(iso).toISOString().slice(0, 19).replace("T", " ") + " UTC";
    return time;
  }

  function stateBadge(name) {
    const badge = document.createElement("span");
    badge.className = "state state-" + name;
    badge.textContent = name;
    return badge;
  }

  function setText(scope, selector, text) {
    for (const element of scope.querySelectorAll(selector)) {
      element.textContent = text;
    }
  }

  // The same geometry and label as chart.py and the chart macro: newest at the right, failures
  // as vertical lines.
  function redraw(svg, check) {
    const data = JSON.parse(svg.dataset.points);
    const size = Number(svg.dataset.size);
    const width = Number(svg.dataset.width);
    const height = Number(svg.dataset.height);
    const pad = Number(svg.dataset.pad);
    data.push([check.latency_ms, check.ok]);
    while (data.length > size) {
      data.shift();
    }
    svg.dataset.points = JSON.stringify(data);
    const step = width / (size - 1);
    const offset = size - data.length;
    const peak = Math.max(0, ...data.filter((p) => p[0] !== null).map((p) => p[0])) || 1;
    const points = [];
    for (const old of svg.querySelectorAll("line.fail")) {
      old.remove();
    }
    data.forEach(([ms, ok], index) => {
      const x = ((offset + index) * step).toFixed(1);
      if (ms !== null) {
        points.push(x + "," + (height - pad - (ms / peak) * (height - 2 * pad)).toFixed(1));
      }
      if (!ok) {
        const line = document.createElementNS(SVG, "line");
        line.setAttribute("class", "fail");
        line.setAttribute("x1", x);
        line.setAttribute("x2", x);
        line.setAttribute("y1", "0");
        line.setAttribute("y2", String(height));
        svg.insertBefore(line, svg.querySelector("polyline"));
      }
    });
    svg.querySelector("polyline").setAttribute("points", points.join(" "));
    svg.setAttribute("aria-label", svg.dataset.label + ": latency of the last " + data.length + " checks, up to " +
      peak.toFixed(0) + " ms");
  }

  function addRow(body, message) {
    const check = message.check;
    const outcome = check.ok ? "ok" : check.error + (check.detail ? ": " + check.detail : "");
    const row = document.createElement("tr");
    const cells = [when(check.checked_at), stateBadge(message.state), check.status === null ? "–" : String(check.status),
      latency(check.latency_ms), outcome];
    for (const content of cells) {
      const cell = document.createElement("td");
      cell.append(content);
      row.append(cell);
    }
    body.prepend(row);
    while (body.rows.length > Number(body.dataset.size)) {
      body.deleteRow(-1);
    }
  }

  function showCheck(message) {
    for (const scope of document.querySelectorAll("[data-target]")) {
      if (scope.dataset.target !== message.target || Number(scope.dataset.lastId) >= message.check.id) {
        continue;
      }
      scope.dataset.lastId = String(message.check.id);
      for (const cell of scope.querySelectorAll(".state-cell")) {
        cell.replaceChildren(stateBadge(message.state));
      }
      setText(scope, "td.latency, dd.latency", latency(message.check.latency_ms));
      for (const cell of scope.querySelectorAll(".checked")) {
        cell.replaceChildren(when(message.check.checked_at));
      }
      if (message.uptime) {
        setText(scope, ".uptime-hour", percent(message.uptime.hour));
        setText(scope, ".uptime-day", percent(message.uptime.day));
      }
      const svg = scope.querySelector("svg.chart");
      if (svg) {
        redraw(svg, message.check);
      }
      const body = scope.querySelector("tbody.checks");
      if (body) {
        addRow(body, message);
        for (const none of scope.querySelectorAll(".none")) {
          none.remove();
        }
      }
    }
  }

  function showChange(change) {
    const list = document.getElementById("changes");
    if (!list || (list.dataset.for && list.dataset.for !== change.target)) {
      return;
    }
    for (const shown of list.children) {
      if (shown.dataset.id === String(change.id)) {
        return; // on the page already, or sent again on reconnecting
      }
    }
    for (const none of list.querySelectorAll(".none")) {
      none.remove();
    }
    const item = document.createElement("li");
    item.dataset.id = String(change.id);
    item.append(when(change.changed_at), " " + change.target + " " + change.from + " → ", stateBadge(change.to));
    list.prepend(item);
  }

  function connect() {
    const socket = new WebSocket(scheme + "//" + location.host + section.dataset.live);
    socket.addEventListener("open", () => {
      delay = 1000;
      status.textContent = "Live: checks appear as they happen.";
      status.classList.add("on");
    });
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "check") {
        showCheck(message);
      } else if (message.type === "change") {
        showChange(message);
      }
    });
    socket.addEventListener("close", () => {
      status.textContent = "Reconnecting…";
      status.classList.remove("on");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }

  connect();
})();

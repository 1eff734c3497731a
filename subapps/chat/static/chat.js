// A chat room: GET /chat/ws/{room} sends the history, then messages, joins and leaves.
"use strict";

(function () {
  const section = document.getElementById("chat");
  if (!section || !("WebSocket" in window)) {
    return;
  }
  const list = document.getElementById("messages");
  const people = document.getElementById("people");
  const status = document.getElementById("chat-status");
  const errorBox = document.getElementById("chat-error");
  const form = document.getElementById("send");
  const nameInput = document.getElementById("name");
  const textInput = document.getElementById("text");
  const button = form.querySelector("button");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const FINAL = new Set([1003, 1008, 1009]); // the server refused what we sent: retrying would not help
  let socket = null;
  let joinedAs = ""; // the name the room announces: the one given when the socket connected
  let retry = null;
  let delay = 1000;

  nameInput.value = localStorage.getItem("chat.name") || "";

  function setStatus(text, on) {
    status.textContent = text;
    status.classList.toggle("on", on);
    textInput.disabled = !on;
    button.disabled = !on;
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  function time(iso) {
    const node = document.createElement("time");
    node.dateTime = iso;
    node.textContent = new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return node;
  }

  function append(item) {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(item);
    if (atBottom) {
      list.scrollTop = list.scrollHeight;
    }
  }

  function messageItem(message) {
    const item = document.createElement("li");
    item.className = "message";
    item.dataset.id = String(message.id);
    const name = document.createElement("strong");
    name.className = "name";
    name.textContent = message.name;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = message.text;
    item.append(time(message.created_at), name, " ", text);
    return item;
  }

  function eventItem(text) {
    const item = document.createElement("li");
    item.className = "event";
    item.textContent = text;
    return item;
  }

  function receive(frame) {
    if (typeof frame.people === "number") {
      people.textContent = String(frame.people);
    }
    switch (frame.type) {
      case "history":
        list.replaceChildren(...frame.messages.map(messageItem));
        list.scrollTop = list.scrollHeight;
        break;
      case "message":
        append(messageItem(frame));
        break;
      case "join":
        append(eventItem(frame.name + " joined"));
        break;
      case "leave":
        append(eventItem(frame.name + " left"));
        break;
      case "error":
        showError(frame.error);
        break;
    }
  }

  function connect() {
    retry = null;
    joinedAs = nameInput.value.trim();
    const current = new WebSocket(scheme + "//" + location.host + section.dataset.socket + "?name=" +
      encodeURIComponent(joinedAs));
    socket = current;
    current.addEventListener("open", () => {
      if (current !== socket) {
        return; // replaced while connecting: a new name has its own socket
      }
      delay = 1000;
      setStatus("Connected: messages appear as they come.", true);
    });
    current.addEventListener("message", (event) => {
      if (current === socket) {
        receive(JSON.parse(event.data));
      }
    });
    current.addEventListener("close", (event) => {
      if (current !== socket) {
        return;
      }
      const reason = event.reason ? " (" + event.reason + ")" : "";
      if (FINAL.has(event.code)) {
        setStatus("Disconnected" + reason + ". Reload the page to try again.", false);
        return;
      }
      setStatus("Disconnected" + reason + "; reconnecting…", false);
      retry = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }

  // The room announces joins and leaves by the name given on connecting, so a new name
  // rejoins: the room hears the old name leave and the new one join.
  nameInput.addEventListener("change", () => {
    const name = nameInput.value.trim();
    localStorage.setItem("chat.name", name);
    if (name === joinedAs) {
      return;
    }
    const old = socket;
    clearTimeout(retry);
    // The form stays usable (focus may be moving to the message box): the rejoin is quick.
    status.textContent = "Joining as " + (name || "anonymous") + "…";
    status.classList.remove("on");
    if (old.readyState === WebSocket.CONNECTING) {
      old.addEventListener("open", () => old.close(1000, "New name")); // closing it now logs an error
    } else {
      old.close(1000, "New name");
    }
    connect();
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = textInput.value.trim();
    if (!text || !socket || socket.readyState !== WebSocket.OPEN) {
      return;
    }
    showError("");
    socket.send(JSON.stringify({ type: "message", text: text, name: nameInput.value.trim() }));
    textInput.value = "";
    textInput.focus();
  });

  connect();
})();

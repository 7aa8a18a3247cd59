// previewd's dashboard: the environments table follows the server's event stream
// (`/events`, Server-Sent Events; the browser resumes with Last-Event-ID after a reconnect),
// and ages and expiry times count down. No build step, no library.
"use strict";

function ago(iso) {
  const ms = Date.now() - Date.parse(iso);
  if (!(ms >= 0)) return iso;
  const m = Math.floor(ms / 60000);
  if (m < 1) return "just now";
  if (m < 60) return m + " min ago";
  const h = Math.floor(m / 60);
  return h < 48 ? h + " h ago" : Math.floor(h / 24) + " days ago";
}

function countdown(iso) {
  if (!iso) return "—";
  const ms = Date.parse(iso) - Date.now();
  if (!(ms === ms)) return iso;
  if (ms <= 0) return "expired";
  const m = Math.floor(ms / 60000);
  return m < 60 ? "in " + m + " min" : "in " + Math.floor(m / 60) + " h " + (m % 60) + " min";
}

function refreshTimes() {
  document.querySelectorAll("time.age").forEach((t) => { if (t.dateTime) t.textContent = ago(t.dateTime); });
  document.querySelectorAll("time.expires").forEach((t) => { t.textContent = countdown(t.dateTime); });
}

function fill(row, e) {
  row.id = "env-" + e.id;
  row.dataset.id = e.id;
  const pr = row.querySelector("a.pr");
  pr.href = "/environments/" + e.id;
  pr.textContent = e.repository + "#" + e.pull_request.number;
  row.querySelector(".title").textContent = e.pull_request.title || "";
  row.querySelector(".branch").textContent = e.pull_request.head_branch;
  row.querySelector(".author").textContent = e.pull_request.author;
  const state = row.querySelector(".state");
  state.textContent = e.state;
  state.className = "state state-" + e.state;
  row.querySelector(".reason").textContent = e.reason || "";
  const url = row.querySelector("a.url");
  url.hidden = !e.url;
  url.textContent = e.url || "";
  if (e.url) url.href = e.url; else url.removeAttribute("href");
  row.querySelector(".commit").textContent = (e.deployed_sha || e.head_sha).slice(0, 7);
  row.querySelector("time.age").dateTime = e.created_at;
  row.querySelector("time.expires").dateTime = e.expires_at || "";
}

function follow(table) {
  const body = table.tBodies[0];
  const template = document.getElementById("row-template");
  const live = document.getElementById("live");
  const source = new EventSource(table.dataset.events);
  // Whether the table is live, for styles and for the browser tests.
  source.addEventListener("open", () => { document.documentElement.dataset.live = "open"; });
  source.addEventListener("error", () => { document.documentElement.dataset.live = "reconnecting"; });
  source.addEventListener("change", (message) => {
    const e = JSON.parse(message.data).environment;
    let row = document.getElementById("env-" + e.id);
    if (!row) {
      row = template.content.firstElementChild.cloneNode(true);
      const empty = document.getElementById("empty");
      if (empty) empty.remove();
      body.insertBefore(row, body.firstElementChild);
    }
    fill(row, e);
    refreshTimes();
    live.textContent = e.repository + "#" + e.pull_request.number + " is " + e.state;
  });
  source.addEventListener("reset", () => window.location.reload());
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("fleet");
  if (table && window.EventSource) follow(table);
  refreshTimes();
  setInterval(refreshTimes, 30000);
});

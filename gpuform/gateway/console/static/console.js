// The gpuform console's only script: live refresh of the charts, the request list and the logs, the
// request detail, and the "send a request" form. It talks to /console/api/... with the session cookie
// and sends the page's CSRF token on every POST. Text from the gateway is set with textContent only.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]);

function expired() { window.location.assign("/console/login?m=expired"); }

async function api(path, options = {}) {
  const headers = { "Accept": "application/json", ...(options.headers || {}) };
  if (options.method && options.method !== "GET") headers["X-Gpuform-Csrf"] = CSRF;
  const resp = await fetch(path, { credentials: "same-origin", ...options, headers });
  if (resp.status === 401) { expired(); throw new Error("session ended"); }
  let body = null;
  try { body = await resp.json(); } catch (e) { body = { error: "answer is not JSON (HTTP " + resp.status + ")" }; }
  if (!resp.ok) throw new Error(body && body.error ? body.error : "HTTP " + resp.status);
  return body;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function secs(v) {
  if (v === null || v === undefined) return "-";
  return v < 1 ? Math.round(v * 1000) + " ms" : v.toFixed(2) + " s";
}

function utc(epoch) {
  return new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function every(ms, fn) {
  fn();
  return setInterval(() => { if (!document.hidden) fn(); }, ms);
}

// ---- charts ------------------------------------------------------------------------------------------
function setupCharts() {
  const box = document.getElementById("charts");
  const select = document.getElementById("window");
  if (!box) return;
  const refresh = async () => {
    const url = "/console/endpoints/" + encodeURIComponent(box.dataset.endpoint) + "/charts?window=" +
      encodeURIComponent(box.dataset.window);
    const resp = await fetch(url, { credentials: "same-origin" });
    if (resp.redirected || resp.status === 401) { expired(); return; }
    if (resp.ok) box.innerHTML = await resp.text();  // server-rendered, escaped SVG from this gateway
  };
  if (select) {
    select.addEventListener("change", () => {
      box.dataset.window = select.value;
      const url = new URL(window.location.href);
      url.searchParams.set("window", select.value);
      window.history.replaceState(null, "", url);
      refresh();
    });
  }
  setInterval(() => { if (!document.hidden) refresh().catch(() => {}); }, 5000);
}

// ---- requests ----------------------------------------------------------------------------------------
function setupRequests() {
  const filter = document.getElementById("status-filter");
  const table = document.getElementById("requests");
  if (!filter || !table) return;
  const endpoint = filter.dataset.endpoint;
  const base = "/console/api/v2/" + encodeURIComponent(endpoint);
  const tbody = table.querySelector("tbody");
  const load = async () => {
    const query = "?limit=50" + (filter.value ? "&status=" + encodeURIComponent(filter.value) : "");
    let data;
    try { data = await api(base + "/requests" + query); } catch (e) { return; }
    tbody.replaceChildren();
    if (!data.requests.length) {
      const row = tbody.insertRow();
      const td = cell(row, "No finished request" + (filter.value ? " with status " + filter.value : "") + " yet.",
        "empty");
      td.colSpan = 6;
    }
    for (const r of data.requests) {
      const row = tbody.insertRow();
      row.dataset.id = r.id;
      const first = document.createElement("td");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link";
      button.textContent = r.id;
      button.setAttribute("aria-label", "Open request " + r.id);
      button.addEventListener("click", () => openJob(base, r.id));
      first.appendChild(button);
      row.appendChild(first);
      const status = cell(row, "");
      const badge = document.createElement("span");
      badge.className = "badge badge-" + r.status.toLowerCase();
      badge.textContent = r.status;
      status.appendChild(badge);
      cell(row, utc(r.created_at));
      cell(row, secs(r.delay));
      cell(row, secs(r.execution));
      cell(row, r.worker_id || "-");
    }
  };
  filter.addEventListener("change", load);
  document.addEventListener("gpuform:sent", load);
  every(3000, load);
}

async function openJob(base, id) {
  const box = document.getElementById("job-detail");
  box.hidden = false;
  box.replaceChildren();
  const title = document.createElement("h3");
  title.textContent = "Request " + id;
  box.appendChild(title);
  const add = (label, value) => {
    const h = document.createElement("h4");
    h.textContent = label;
    const pre = document.createElement("pre");
    pre.className = "out";
    pre.tabIndex = 0;
    pre.textContent = pretty(value);
    box.append(h, pre);
  };
  try {
    const job = await api(base + "/jobs/" + encodeURIComponent(id));
    const p = document.createElement("p");
    p.textContent = job.status + " · delay " + job.delayTime + " ms · execution " + job.executionTime +
      " ms · worker " + (job.worker_id || "-");
    box.appendChild(p);
    add("Input", job.input);
    if (job.error !== undefined && job.error !== null) add("Error", job.error);
    else add("Output", job.output);
  } catch (e) {
    const p = document.createElement("p");
    p.className = "alert";
    p.textContent = e.message;
    box.appendChild(p);
  }
  box.focus();
}

// ---- send a request ----------------------------------------------------------------------------------
function setupSend() {
  const form = document.getElementById("send-form");
  if (!form) return;
  const out = document.getElementById("send-output");
  const status = document.getElementById("send-status");
  const base = "/console/api/v2/" + encodeURIComponent(form.dataset.endpoint);
  const show = (text) => { out.textContent = text; };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let input;
    try { input = JSON.parse(form.elements.input.value); } catch (e) {
      status.textContent = "The input is not JSON: " + e.message;
      return;
    }
    const mode = form.elements.mode.value;
    const post = (route) => api(base + "/" + route, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ input }),
    });
    show("");
    status.textContent = "Sending…";
    try {
      if (mode === "runsync") {
        status.textContent = "Waiting for the answer…";
        const result = await post("runsync");
        status.textContent = result.status + " (" + result.id + ")";
        show(pretty(result));
      } else {
        const job = await post("run");
        status.textContent = job.status + " (" + job.id + ")";
        await (mode === "stream" ? streamJob(base, job.id, status, out) : pollJob(base, job.id, status, out));
      }
    } catch (e) {
      status.textContent = "Failed: " + e.message;
    }
    document.dispatchEvent(new Event("gpuform:sent"));
  });
}

async function pollJob(base, id, status, out) {
  for (;;) {
    const job = await api(base + "/status/" + encodeURIComponent(id));
    status.textContent = job.status + " (" + id + ")";
    out.textContent = pretty(job);
    if (TERMINAL.has(job.status)) return;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

function streamJob(base, id, status, out) {
  return new Promise((resolve) => {
    const source = new EventSource(base + "/stream/" + encodeURIComponent(id));
    source.onmessage = (event) => {
      const chunk = JSON.parse(event.data);
      out.textContent += pretty(chunk.output) + "\n";
      status.textContent = "IN_PROGRESS (" + id + "): streaming";
    };
    source.addEventListener("status", (event) => {
      const job = JSON.parse(event.data);
      status.textContent = job.status + " (" + id + ")";
      out.textContent += "\n" + pretty(job);
      source.close();
      resolve();
    });
    source.onerror = () => { source.close(); status.textContent = "The stream ended early."; resolve(); };
  });
}

// ---- logs (admin) ------------------------------------------------------------------------------------
function setupLogs() {
  const gatewayPre = document.getElementById("gateway-log");
  if (!gatewayPre) return;
  let last = 0;
  const lines = [];
  every(2000, async () => {
    let data;
    try { data = await api("/console/api/gateway/log?after=" + last); } catch (e) { return; }
    if (data.last < last) lines.length = 0;  // another replica or a restart: start over
    last = data.last;
    lines.push(...data.lines);
    lines.splice(0, Math.max(0, lines.length - 500));
    gatewayPre.textContent = lines.join("\n");
    gatewayPre.scrollTop = gatewayPre.scrollHeight;
  });
  const workerPre = document.getElementById("worker-log");
  const workerName = document.getElementById("worker-log-name");
  let worker = null;
  document.addEventListener("click", (event) => {  // delegated: the workers table is refreshed in place
    const button = event.target.closest("[data-worker-log]");
    if (!button) return;
    worker = button.dataset.workerLog;
    workerName.textContent = worker;
    workerPre.textContent = "loading…";
    tailWorker();
  });
  const tailWorker = async () => {
    if (!worker) return;
    try {
      const data = await api("/console/api/workers/" + encodeURIComponent(worker) + "/log?tail=200");
      workerPre.textContent = data.log || "(no output yet)";
      workerPre.scrollTop = workerPre.scrollHeight;
    } catch (e) { workerPre.textContent = e.message; }
  };
  setInterval(() => { if (!document.hidden) tailWorker(); }, 2000);
}

// ---- tables rendered on the server, refreshed in place ------------------------------------------------
// The overview's endpoints (from the page itself) and an endpoint's workers (from its workers fragment).
function refreshTable(id, url) {
  const table = document.getElementById(id);
  if (!table) return;
  setInterval(async () => {
    if (document.hidden) return;
    const resp = await fetch(url, { credentials: "same-origin" });
    if (resp.redirected) { expired(); return; }
    if (!resp.ok) return;
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    const fresh = doc.querySelector("#" + id + " tbody");
    if (fresh) table.querySelector("tbody").replaceWith(document.importNode(fresh, true));
  }, 5000);
}

function setupTables() {
  refreshTable("endpoints", "/console");
  const charts = document.getElementById("charts");
  if (charts) {
    refreshTable("workers", "/console/endpoints/" + encodeURIComponent(charts.dataset.endpoint) + "/workers");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupTables();
  setupCharts();
  setupRequests();
  setupSend();
  setupLogs();
});

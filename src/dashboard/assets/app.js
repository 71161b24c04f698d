// ccfan dashboard: one live view of every run, kept current by the server's events (no polling). Text from
// the state database is always set as text, never parsed as HTML; the task detail is HTML the server rendered
// and escaped (the same code as `ccfan report`). Sign-in: the printed link carries a one-time token in its
// fragment; the page trades it for this start's session secret, kept in this origin's storage and sent as a
// header (no cookie, so no other site or local port can borrow it).
"use strict";

const SESSION = "ccfan-dashboard-session";
let session = null;
const GROUPS = [["needs_you", "Needs you"], ["working", "Working"], ["done", "Done"]];
const runs = new Map(); // run id -> {run facts, rows: Map(task id -> row)}
let selectedRun = null;
let selectedTask = null;
let selectedAttempt = null;
let detailAsked = 0; // the newest detail request: older answers are dropped
let detailReloaded = 0;
// How fresh the page is: milliseconds from a stored state change to the page showing it (benchmarks read it).
window.ccfanStats = { latencies: [], snapshotAt: null };

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function flash(message, bad) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = bad ? "bad" : "";
  box.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

function money(usd) { return usd == null ? "–" : "$" + usd.toFixed(usd < 1 ? 4 : 2); }
function secs(s) { return s == null ? "–" : s < 90 ? s.toFixed(1) + "s" : Math.round(s / 60) + "m"; }
function tokens(n) { return n == null ? "–" : n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e3 ? (n / 1e3).toFixed(1) + "k" : String(n); }

// ---- the model: a snapshot, then deltas ----

function store(panel) {
  const rows = new Map();
  panel.rows.forEach((row, index) => { row.order = index; rows.set(row.id, row); });
  runs.set(panel.run_id, { run: { ...panel, rows: undefined }, rows });
}

function onSnapshot(data) {
  runs.clear();
  for (const panel of data.runs) store(panel);
  if (!selectedRun || !runs.has(selectedRun)) selectedRun = data.runs.length ? data.runs[0].run_id : null;
  renderRuns();
  renderRun();
  window.ccfanStats.snapshotAt = performance.now();
}

function onDelta(data) {
  const now = Date.now();
  let newRun = false;
  for (const delta of data.deltas) {
    let known = runs.get(delta.run_id);
    if (!known) {
      known = { run: delta.run, rows: new Map() };
      // Newest first, as in the snapshot.
      const older = [...runs];
      runs.clear();
      runs.set(delta.run_id, known);
      for (const [id, value] of older) runs.set(id, value);
      newRun = true;
    } else if (delta.run) {
      known.run = delta.run;
    }
    for (const row of delta.rows) {
      const old = known.rows.get(row.id);
      row.order = old ? old.order : known.rows.size;
      known.rows.set(row.id, row);
      if (delta.run_id === selectedRun) placeRow(row);
      if (old && old.state !== row.state && row.since_ms) window.ccfanStats.latencies.push(now - row.since_ms);
      if (delta.run_id === selectedRun && row.id === selectedTask) {
        const moved = !old || old.state !== row.state || old.attempt !== row.attempt;
        // Its log and its agent's progress change as it runs: the detail follows, at most once a second.
        if (moved || Date.now() - detailReloaded > 1000) loadDetail();
      }
    }
  }
  if (newRun && !selectedRun) selectedRun = data.deltas[0].run_id;
  renderRuns();
  if (document.getElementById("run-head")) renderHead(); else renderRun();
  countGroups();
}

function auth(extra) {
  return { ...(extra || {}), authorization: "Bearer " + session };
}

function signedOut() {
  localStorage.removeItem(SESSION);
  const live = document.getElementById("live");
  live.textContent = "signed out";
  live.className = "live off";
  document.getElementById("run").replaceChildren(el("p", { class: "needs",
    text: "Signed out: open the link `ccfan dashboard` printed. A link works once; restart `ccfan dashboard` for a new one." }));
}

async function signIn() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) {
    // Out of the address bar and this history entry at once.
    history.replaceState(null, "", "/");
    const response = await fetch("/api/session", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token }),
    });
    if (response.ok) localStorage.setItem(SESSION, (await response.json()).session);
  }
  session = localStorage.getItem(SESSION);
  return session != null;
}

// Server-sent events over fetch (EventSource cannot send the session header).
async function connect() {
  const live = document.getElementById("live");
  for (;;) {
    try {
      const response = await fetch("/api/events", { headers: auth() });
      if (response.status === 401) { signedOut(); return; }
      if (!response.ok) throw new Error("HTTP " + response.status);
      live.textContent = "live"; live.className = "live on";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      // The server went away or restarted: try again shortly.
    }
    live.textContent = "reconnecting…"; live.className = "live off";
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function dispatch(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  let parsed;
  try { parsed = JSON.parse(data.join("\n")); } catch (error) { return; }
  if (kind === "snapshot") onSnapshot(parsed);
  else if (kind === "delta") onDelta(parsed);
  else if (kind === "stale") throw new Error("fell behind"); // reconnects: a fresh snapshot
}

// ---- rendering ----

function groupCounts(rows) {
  const counts = { needs_you: 0, working: 0, done: 0 };
  for (const row of rows.values()) counts[row.group]++;
  return counts;
}

function renderRuns() {
  const aside = document.getElementById("runs");
  aside.replaceChildren();
  for (const [id, { run, rows }] of runs) {
    const counts = groupCounts(rows);
    aside.append(el("button", {
      type: "button", class: "run" + (id === selectedRun ? " on" : ""), "data-run": id, "data-run-state": run.state,
      onclick: () => { selectedRun = id; selectedTask = null; renderRuns(); renderRun(); },
    },
      el("code", { text: id }), el("br"),
      el("span", { class: "counts" },
        el("span", { class: counts.needs_you ? "n" : "", text: counts.needs_you + " need you" }),
        ` · ${counts.working} working · ${counts.done} done · ${run.state}`)));
  }
}

function action(run, label, act, opts) {
  return el("button", { type: "button", class: "act" + (opts && opts.danger ? " danger" : ""), "data-action": act.action, text: label,
    onclick: () => ask(label, opts && opts.confirm, opts && opts.input, run, act) });
}

function renderHead() {
  const known = runs.get(selectedRun);
  const head = document.getElementById("run-head");
  if (!known || !head) return;
  const run = known.run;
  head.replaceChildren(
    el("h2", {}, "Run ", el("code", { text: run.run_id })),
    el("p", { class: "meta", text: `${run.state}${run.carried ? " (carried by a live ccfan process)" : ""} · base ${run.base.slice(0, 10)} · ${run.no_merge ? "stops at accepted" : "lands on " + (run.target || "its branch")} · started ${run.created_at} · cost ${money(run.cost_usd)}` }),
    el("div", { class: "actions" },
      action(run.run_id, "Merge accepted", { action: "merge" }, { confirm: "Land every accepted task of this run on its target branch?" }),
      action(run.run_id, "Cancel run", { action: "cancel" }, { danger: true, confirm: "Stop every running worker of this run? Their work is kept on salvage refs." }),
      action(run.run_id, "Roll back run", { action: "rollback" }, { danger: true, confirm: "Roll back every task of this run (merged ones are reverted)? Every attempt stays salvaged." })));
}

function renderRun() {
  const section = document.getElementById("run");
  const known = runs.get(selectedRun);
  if (!known) return;
  section.replaceChildren(el("div", { id: "run-head" }));
  renderHead();
  for (const [group, title] of GROUPS) {
    const body = el("tbody", { id: "g-" + group });
    section.append(
      el("h3", {}, title + " ", el("span", { class: "count", id: "n-" + group })),
      el("table", { class: "g-" + group },
        el("thead", {}, el("tr", {}, ...["task", "state", "try", "time", "doing / needs", "verdict", "spend"].map((h) => el("th", { text: h })))),
        body));
  }
  for (const row of known.rows.values()) placeRow(row);
  countGroups();
  document.getElementById("detail").hidden = !selectedTask;
}

function countGroups() {
  const known = runs.get(selectedRun);
  if (!known) return;
  const counts = groupCounts(known.rows);
  for (const [group] of GROUPS) {
    const node = document.getElementById("n-" + group);
    if (node) node.textContent = `(${counts[group]})`;
  }
}

function rowCells(row) {
  const said = row.needs || row.action || row.reason || "";
  const doing = el("span", { class: row.needs ? "needs clamp" : "clamp", text: said, title: said });
  const verdict = el("td", {}, row.verdict || "");
  if (row.findings.length) {
    const list = el("ul", { class: "findings" });
    for (const finding of row.findings.slice(0, 3)) list.append(el("li", { text: finding, title: finding }));
    if (row.findings.length > 3) list.append(el("li", { text: `… ${row.findings.length - 3} more` }));
    verdict.append(list);
  }
  if (row.review) verdict.append(el("div", { class: "review", text: row.review, title: row.review }));
  return [
    el("td", {}, el("code", { text: row.id })),
    el("td", {}, el("span", { class: "state", text: row.state })),
    el("td", { text: String(row.attempt) }),
    row.started_ms
      ? el("td", { class: "elapsed", "data-started": String(row.started_ms), text: secs((Date.now() - row.started_ms) / 1000) })
      : el("td", { class: "elapsed", text: secs(row.elapsed_secs) }),
    el("td", {}, doing),
    verdict,
    el("td", { class: "spend", text: row.tokens == null && row.cost_usd == null ? "–" : `${tokens(row.tokens)} tok · ${money(row.cost_usd)}` }),
  ];
}

function placeRow(row) {
  const body = document.getElementById("g-" + row.group);
  if (!body) return;
  let tr = document.getElementById("task-" + row.id);
  if (!tr) {
    tr = el("tr", { id: "task-" + row.id, class: "task", onclick: () => selectTask(row.id) });
  }
  tr.dataset.state = row.state;
  tr.dataset.attempt = String(row.attempt);
  tr.classList.toggle("on", row.id === selectedTask);
  tr.dataset.order = String(row.order);
  tr.replaceChildren(...rowCells(row));
  if (tr.parentNode !== body) {
    // Task-file order within its group.
    const next = [...body.children].find((other) => Number(other.dataset.order) > row.order);
    body.insertBefore(tr, next || null);
  }
}

// ---- a task's detail and its actions ----

function selectTask(id) {
  selectedTask = id;
  selectedAttempt = null;
  // The previous task's buttons go at once: no click may land on the task that was shown before.
  const detail = document.getElementById("detail");
  detail.dataset.shows = "";
  detail.replaceChildren(el("p", { class: "meta", text: `loading ${id}…` }));
  detail.hidden = false;
  for (const tr of document.querySelectorAll("tr.task")) tr.classList.toggle("on", tr.id === "task-" + id);
  loadDetail();
}

async function loadDetail() {
  const detail = document.getElementById("detail");
  const run = selectedRun;
  const known = runs.get(run);
  const row = known && known.rows.get(selectedTask);
  if (!row) { detail.hidden = true; return; }
  const asked = ++detailAsked;
  detailReloaded = Date.now();
  const query = selectedAttempt ? `?attempt=${selectedAttempt}` : "";
  const response = await fetch(`/api/runs/${encodeURIComponent(run)}/tasks/${encodeURIComponent(row.id)}${query}`, { headers: auth() });
  if (response.status === 401) { signedOut(); return; }
  const html = response.ok ? await response.text() : "";
  // Another task or run was picked meanwhile: this answer is not for what is shown.
  if (asked !== detailAsked || run !== selectedRun || row.id !== selectedTask) return;
  const attempts = el("p", { class: "attempts" }, "diff of attempt: ");
  for (let n = 1; n <= row.attempt; n++) {
    attempts.append(el("button", { type: "button", class: (selectedAttempt || row.attempt) === n ? "on" : "", text: String(n),
      onclick: () => { selectedAttempt = n; loadDetail(); } }));
  }
  const task = { task: row.id };
  const shown = detail.dataset.shows === `${run}/${row.id}`;
  const body = el("div", { id: "detail-body" });
  body.innerHTML = html; // rendered and escaped by the server, secrets redacted
  if (shown) {
    // The same task again (it moved on, or its log grew): its buttons stay where they are, and the sections the
    // person opened or closed stay so.
    const before = [...detail.querySelectorAll("#detail-body details")].map((d) => d.open);
    [...body.querySelectorAll("details")].forEach((d, i) => { if (i < before.length) d.open = before[i]; });
    document.getElementById("detail-body").replaceWith(body);
    const bar = detail.querySelector(".attempts");
    if (bar) bar.replaceWith(row.attempt > 1 ? attempts : el("span", { class: "attempts" }));
    else if (row.attempt > 1) body.before(attempts);
    detail.hidden = false;
    return;
  }
  detail.dataset.shows = `${run}/${row.id}`;
  const planned = row.state === "planned" ? [
    action(run, "Approve plan", { ...task, action: "approve", plan: row.plan_sha256 }, { confirm: `Approve ${row.id}'s plan (${(row.plan_sha256 || "").slice(0, 12)}) and run it now? (recorded with your name)` }),
    action(run, "Reject plan…", { ...task, action: "reject" }, { input: "note", danger: true, confirm: `Reject ${row.id}'s plan? It ends without running. Say why:` }),
  ] : [];
  detail.replaceChildren(
    el("div", { class: "actions" },
      ...planned,
      action(run, "Rework…", { ...task, action: "rework" }, { input: "note", confirm: `Send ${row.id} back to its worker with this note:` }),
      action(run, "Retry", { ...task, action: "retry" }, { confirm: `Give ${row.id} a fresh rework budget and another attempt?` }),
      action(run, "Accept…", { ...task, action: "accept" }, { input: "reason", danger: true, confirm: `Accept ${row.id} over the gate's verdict${known.run.no_merge ? "" : " and land it on " + (known.run.target || "its branch") + " now"}? Say why (recorded with your name):` }),
      action(run, "Roll back", { ...task, action: "rollback" }, { danger: true, confirm: `Roll ${row.id} back? Its attempts stay on salvage refs.` }),
      action(run, "Cancel", { ...task, action: "cancel" }, { danger: true, confirm: `Stop ${row.id}'s worker? Its work is kept.` })),
    row.attempt > 1 ? attempts : el("span", { class: "attempts" }),
    body);
  detail.hidden = false;
}

function ask(title, text, input, run, act) {
  const modal = document.getElementById("ask");
  const field = document.getElementById("ask-input");
  document.getElementById("ask-title").textContent = title;
  document.getElementById("ask-text").textContent = text || "";
  field.hidden = !input;
  field.value = "";
  field.placeholder = input || "";
  modal.hidden = false;
  if (input) field.focus();
  const close = () => { modal.hidden = true; yes.onclick = null; no.onclick = null; };
  const yes = document.getElementById("ask-yes");
  const no = document.getElementById("ask-no");
  no.onclick = close;
  yes.onclick = () => {
    if (input && !field.value.trim()) { field.focus(); return; }
    const body = { ...act };
    if (input) body[input] = field.value.trim();
    close();
    send(run, body);
  };
}

async function send(run, body) {
  try {
    const response = await fetch(`/api/runs/${encodeURIComponent(run)}/actions`, {
      method: "POST",
      headers: auth({ "content-type": "application/json" }),
      body: JSON.stringify(body),
    });
    if (response.status === 401) { signedOut(); return; }
    const answer = await response.json().catch(() => ({ ok: false, error: `HTTP ${response.status}` }));
    if (answer.ok) flash(`${body.action}${body.task ? " " + body.task : ""}: ${answer.result.finished ? "done" : "started"}`);
    else flash(`${body.action}: ${answer.error}`, true);
  } catch (error) {
    flash(`${body.action}: ${error}`, true);
  }
}

// ---- the scorecard ----

async function loadScorecard() {
  const section = document.getElementById("score");
  const response = await fetch("/api/scorecard", { headers: auth() });
  if (!response.ok) { section.textContent = "cannot read the scorecard"; return; }
  const card = await response.json();
  const heads = ["profile", "model", "tasks", "accepted", "first try", "mean reworks", "scope", "secrets", "tests failed", "median time", "cost", "per accepted"];
  const body = el("tbody");
  for (const r of card.rows) {
    body.append(el("tr", {}, ...[r.profile, r.model, r.tasks, r.accepted, r.accepted_first_attempt, r.mean_reworks.toFixed(2),
      r.scope_violations, r.secrets_caught, r.tests_failed, secs(r.median_secs), money(r.cost_usd), money(r.cost_per_accepted_usd)]
      .map((v) => el("td", { text: String(v) }))));
  }
  section.replaceChildren(el("h2", { text: `Scorecard (${card.runs} runs)` }),
    el("table", {}, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { text: h })))), body));
}

function tab(name) {
  document.getElementById("runs-view").hidden = name !== "runs";
  document.getElementById("score-view").hidden = name !== "score";
  document.getElementById("tab-runs").classList.toggle("on", name === "runs");
  document.getElementById("tab-score").classList.toggle("on", name === "score");
  if (name === "score") loadScorecard();
}

// Running attempts count their own time: the server sends when they started, not a figure that changes.
setInterval(() => {
  for (const cell of document.querySelectorAll("td.elapsed[data-started]")) {
    cell.textContent = secs((Date.now() - Number(cell.dataset.started)) / 1000);
  }
}, 1000);

document.getElementById("tab-runs").addEventListener("click", () => tab("runs"));
document.getElementById("tab-score").addEventListener("click", () => tab("score"));
signIn().then((ok) => (ok ? connect() : signedOut()));

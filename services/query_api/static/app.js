// auditpipe viewer: plain JS, no build. Every call carries the bearer token kept in sessionStorage.
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const MULTI = ["action", "event_type", "target_type", "source", "project", "environment", "status"];
const SINGLE = ["org", "target_id", "actor", "actor_type", "ip", "q"];
const state = { sort: "occurred_at", order: "desc", cursor: null, loading: false, done: false, me: null };

function token() { return sessionStorage.getItem("auditpipe_token") || ""; }

async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: { ...(opts.headers || {}), Authorization: "Bearer " + token() } });
  if (!res.ok) {
    let msg = res.status + " " + res.statusText;
    try {
      const body = await res.json();
      if (Array.isArray(body.detail)) msg = body.detail.map(d => (d.loc || []).slice(-1)[0] + ": " + d.msg).join("; ");
      else if (body.detail) msg = body.detail;
    } catch (_) { /* not JSON */ }
    const err = new Error(msg); err.status = res.status; throw err;
  }
  return res;
}

function showError(e) { const el = $("#error"); if (!e) { el.hidden = true; return; } el.textContent = e.message || String(e); el.hidden = false; }

// datetime-local (browser time) <-> ISO UTC
function localToIso(v) { return v ? new Date(v).toISOString() : ""; }

function params() {
  const p = new URLSearchParams();
  for (const n of MULTI) {
    for (const v of $("#" + n).value.split(",").map(s => s.trim()).filter(Boolean)) p.append(n, v);
  }
  for (const n of SINGLE) { const v = $("#" + n).value.trim(); if (v) p.set(n, v); }
  const since = localToIso($("#since").value), until = localToIso($("#until").value);
  if (since) p.set("since", since);
  if (until) p.set("until", until);
  return p;
}

function fmtTime(iso) {
  const d = new Date(iso);
  return { local: d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }), utc: d.toISOString().replace(".000Z", "Z") + " (UTC)" };
}

function td(text, cls, sub) {
  const c = document.createElement("td");
  if (cls) c.className = cls;
  c.textContent = text || "";
  if (sub) { const s = document.createElement("div"); s.className = "sub"; s.textContent = sub; c.appendChild(s); }
  return c;
}

function row(ev) {
  const tr = document.createElement("tr");
  tr.className = "ev"; tr.dataset.id = ev.event_id;
  const t = fmtTime(ev.occurred_at);
  const time = td(t.local, "time"); time.title = t.utc; tr.appendChild(time);
  tr.appendChild(td(ev.action, "act", ev.change));
  tr.appendChild(td(ev.target_name || ev.target_id, "target", ev.target_type + (ev.target_id ? " · " + ev.target_id : "")));
  const actor = ev.actor_type === "system" ? "system" : (ev.actor_name || ev.actor_id);
  tr.appendChild(td(actor, "actor", ev.actor_type + (ev.client_ip ? " · " + ev.client_ip : "")));
  tr.appendChild(td(ev.source, "source"));
  tr.appendChild(td(ev.status ? String(ev.status) : "", "status st-" + String(ev.status)[0]));
  const tools = document.createElement("td");
  if (ev.target_id) {
    const b = document.createElement("button");
    b.type = "button"; b.className = "linkbtn see-target"; b.textContent = "events for this target";
    b.title = "See every event for " + ev.target_type + " " + ev.target_id;
    b.addEventListener("click", e => { e.stopPropagation(); seeTarget(ev); });
    tools.appendChild(b);
  }
  tr.appendChild(tools);
  tr.addEventListener("click", () => toggle(tr));
  return tr;
}

async function toggle(tr) {
  const next = tr.nextElementSibling;
  if (next && next.classList.contains("detail")) { next.remove(); tr.classList.remove("open"); return; }
  tr.classList.add("open");
  const d = document.createElement("tr"); d.className = "detail";
  const c = document.createElement("td"); c.colSpan = 7; c.textContent = "Loading…";
  d.appendChild(c); tr.after(d);
  try {
    const ev = await (await api("/api/events/" + encodeURIComponent(tr.dataset.id))).json();
    const pre = document.createElement("pre"); pre.className = "json";
    pre.textContent = JSON.stringify(ev, null, 2);
    c.textContent = ""; c.appendChild(pre);
  } catch (e) { c.textContent = "Could not load details: " + e.message; }
}

function seeTarget(ev) {
  for (const n of MULTI.concat(SINGLE)) $("#" + n).value = "";
  $("#target_id").value = ev.target_id;
  if (!state.me || !state.me.scope.org) $("#org").value = ev.org_id;
  reload();
}

async function loadPage() {
  if (state.loading || state.done) return;
  state.loading = true; showError(null);
  const p = params(); p.set("sort", state.sort); p.set("order", state.order);
  if (state.cursor) p.set("cursor", state.cursor);
  try {
    const body = await (await api("/api/events?" + p)).json();
    const tbody = $("#events tbody");
    for (const ev of body.events) tbody.appendChild(row(ev));
    state.cursor = body.next_cursor; state.done = !body.next_cursor;
    $("#more").hidden = state.done; $("#end").hidden = !state.done;
    $("#summary").textContent = tbody.querySelectorAll("tr.ev").length + " events shown";
  } catch (e) { showError(e); if (e.status === 401) logout(); }
  finally { state.loading = false; }
}

async function loadFacets() {
  try {
    const body = await (await api("/api/events/facets?" + params())).json();
    for (const [k, vals] of Object.entries(body.facets)) {
      const dl = $("#dl-" + k); if (!dl) continue;
      dl.innerHTML = "";
      for (const v of vals) { const o = document.createElement("option"); o.value = v.value; o.label = v.count + " events"; dl.appendChild(o); }
    }
  } catch (_) { /* menus are a convenience */ }
}

function reload() {
  state.cursor = null; state.done = false;
  $("#events tbody").innerHTML = "";
  document.querySelectorAll("th.sortable").forEach(th => {
    th.classList.toggle("sorted", th.dataset.sort === state.sort);
    th.classList.toggle("asc", th.dataset.sort === state.sort && state.order === "asc");
  });
  loadPage(); loadFacets();
}

async function download(fmt) {
  const p = params(); p.set("format", fmt); p.set("sort", state.sort); p.set("order", state.order);
  try {
    const res = await api("/api/events/export?" + p);
    const blob = await res.blob();
    const m = /filename="([^"]+)"/.exec(res.headers.get("content-disposition") || "");
    saveBlob(blob, m ? m[1] : "events." + fmt);
  } catch (e) { showError(e); }
}

function saveBlob(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = name;
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

async function showArchives() {
  const sec = $("#archives"); sec.hidden = false;
  const tbody = $("tbody", sec); tbody.innerHTML = "";
  const org = $("#org").value.trim();
  try {
    const body = await (await api("/api/events/archives" + (org ? "?org=" + encodeURIComponent(org) : ""))).json();
    $("#min-age").textContent = body.delete_min_age_days;
    if (!body.archives.length) { const tr = document.createElement("tr"); tr.appendChild(td("No archive files", "", "")); tbody.appendChild(tr); }
    for (const f of body.archives) {
      const tr = document.createElement("tr");
      tr.append(td(f.org_id), td(f.day), td(f.filename), td((f.size / 1024).toFixed(1) + " KiB"));
      const c = td(fmtTime(f.created_at).local); c.title = f.created_at; tr.appendChild(c);
      const tools = document.createElement("td");
      const q = "?org=" + encodeURIComponent(f.org_id);
      const dl = document.createElement("button"); dl.type = "button"; dl.textContent = "Download";
      dl.addEventListener("click", async () => {
        try { const r = await api("/api/events/archives/" + encodeURIComponent(f.filename) + q); saveBlob(await r.blob(), f.filename); }
        catch (e) { showError(e); }
      });
      const del = document.createElement("button"); del.type = "button"; del.textContent = "Delete";
      del.disabled = !f.deletable; del.title = f.deletable ? "Delete permanently (audited)" : "Too recent to delete";
      del.addEventListener("click", async () => {
        if (!confirm("Delete " + f.filename + " permanently? This is audited.")) return;
        try { await api("/api/events/archives/" + encodeURIComponent(f.filename) + q, { method: "DELETE" }); showArchives(); }
        catch (e) { showError(e); }
      });
      tools.append(dl, " ", del); tr.appendChild(tools); tbody.appendChild(tr);
    }
  } catch (e) { showError(e); }
}

function logout() {
  sessionStorage.removeItem("auditpipe_token");
  $("#app").hidden = true; $("#logout").hidden = true; $("#token").hidden = false; $("#who").textContent = "";
  $("#token-form button[type=submit]").hidden = false;
}

async function start() {
  if (!token()) return;
  try {
    state.me = await (await api("/api/me")).json();
  } catch (e) { showError(e); logout(); $("#app").hidden = false; return; }
  const s = state.me.scope;
  $("#who").textContent = state.me.principal + " · " + state.me.roles.join(", ") + (s.org ? " · org " + s.org : "");
  if (s.org) { $("#org").value = s.org; $("#org").readOnly = true; }
  $("#show-archives").hidden = !state.me.roles.includes("Manager");
  $("#app").hidden = false; $("#logout").hidden = false; $("#token").hidden = true;
  $("#token-form button[type=submit]").hidden = true;
  reload();
}

$("#token-form").addEventListener("submit", e => {
  e.preventDefault();
  const v = $("#token").value.trim();
  if (v) { sessionStorage.setItem("auditpipe_token", v); $("#token").value = ""; start(); }
});
$("#logout").addEventListener("click", logout);
$("#filters").addEventListener("submit", e => { e.preventDefault(); reload(); });
$("#filters").addEventListener("change", e => { if (e.target.id !== "q") reload(); });
$("#reset").addEventListener("click", () => {
  for (const n of MULTI.concat(SINGLE, ["since", "until"])) if (!$("#" + n).readOnly) $("#" + n).value = "";
  reload();
});
document.querySelectorAll("th.sortable").forEach(th => th.addEventListener("click", () => {
  if (state.sort === th.dataset.sort) state.order = state.order === "desc" ? "asc" : "desc";
  else { state.sort = th.dataset.sort; state.order = th.dataset.sort === "occurred_at" ? "desc" : "asc"; }
  reload();
}));
$("#more").addEventListener("click", loadPage);
$("#dl-csv").addEventListener("click", () => download("csv"));
$("#dl-jsonl").addEventListener("click", () => download("jsonl"));
$("#show-archives").addEventListener("click", showArchives);
$("#close-archives").addEventListener("click", () => { $("#archives").hidden = true; });
new IntersectionObserver(entries => {
  if (entries.some(e => e.isIntersecting) && state.cursor && !$("#app").hidden) loadPage();
}).observe($("#sentinel"));
start();

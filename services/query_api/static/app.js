// auditpipe viewer: plain JS, no build, no inline script or handler (it runs under a strict CSP).
// Every call carries the bearer token kept in sessionStorage; the token never goes into the URL.
//
// The URL holds the view: filters (the API's own parameter names), sort, order, the view (all events or
// triggers and webhooks) and the open event. Every change pushes a history entry, so a link can be shared
// and the back button undoes the last change. Other scripts can add to an opened event's details by
// listening for the "auditpipe:event-shown" event on document ({detail: {event, element}}).
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const MULTI = ["action", "event_type", "target_type", "source", "project", "environment", "status"];
const SINGLE = ["org", "target_id", "actor", "actor_type", "ip", "q"];
const SVG = "http://www.w3.org/2000/svg";
const state = {
  sort: "occurred_at", order: "desc", view: "all", event: null,
  cursor: null, loading: false, done: false, me: null, generation: 0, timeline: null,
};

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

// ---------------------------------------------------------------- time: datetime-local (browser time) <-> ISO UTC
function localToIso(v) { return v ? new Date(v).toISOString() : ""; }
function pad(n) { return String(n).padStart(2, "0"); }
function isoToLocal(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
}
function fmtTime(iso) {
  const d = new Date(iso);
  return { local: d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }), utc: d.toISOString().replace(".000Z", "Z") + " (UTC)" };
}
function fmtShort(iso, stepS) {
  const d = new Date(iso);
  const opts = stepS >= 86400 ? { dateStyle: "medium" } : { dateStyle: "short", timeStyle: stepS < 60 ? "medium" : "short" };
  return d.toLocaleString(undefined, opts);
}

// ---------------------------------------------------------------- filters <-> URL <-> API
function filterParams() {
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

function params() { // what the API is asked: the filters plus the view
  const p = filterParams();
  if (state.view === "triggers") p.set("triggers", "true");
  return p;
}

function urlParams() { // what the URL shows: the filters, sort, view and open event
  const p = filterParams();
  if (state.sort !== "occurred_at" || state.order !== "desc") { p.set("sort", state.sort); p.set("order", state.order); }
  if (state.view !== "all") p.set("view", state.view);
  if (state.event) p.set("event", state.event);
  return p;
}

function pushUrl(replace) {
  const qs = urlParams().toString();
  const url = location.pathname + (qs ? "?" + qs : "");
  if (url === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
}

function applyUrl() { // the URL -> the form and the state
  const p = new URLSearchParams(location.search);
  for (const n of MULTI) $("#" + n).value = p.getAll(n).join(", ");
  for (const n of SINGLE) { if (!$("#" + n).readOnly) $("#" + n).value = p.get(n) || ""; }
  $("#since").value = p.get("since") ? isoToLocal(p.get("since")) : "";
  $("#until").value = p.get("until") ? isoToLocal(p.get("until")) : "";
  state.sort = ["occurred_at", "action", "target_type", "actor"].includes(p.get("sort")) ? p.get("sort") : "occurred_at";
  state.order = p.get("order") === "asc" ? "asc" : "desc";
  state.view = p.get("view") === "triggers" ? "triggers" : "all";
  state.event = p.get("event") || null;
}

// ---------------------------------------------------------------- the table
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
  tr.addEventListener("click", () => toggle(tr, true));
  return tr;
}

function closeDetails() {
  document.querySelectorAll("#events tr.detail").forEach(d => d.remove());
  document.querySelectorAll("#events tr.ev.open").forEach(r => r.classList.remove("open"));
  const panel = $("#event-panel"); panel.hidden = true; panel.textContent = "";
}

async function toggle(tr, push) {
  const wasOpen = tr.classList.contains("open");
  closeDetails();
  if (wasOpen) { state.event = null; if (push) pushUrl(); return; }
  tr.classList.add("open");
  state.event = tr.dataset.id;
  if (push) pushUrl();
  const d = document.createElement("tr"); d.className = "detail";
  const c = document.createElement("td"); c.colSpan = 7; c.textContent = "Loading…";
  d.appendChild(c); tr.after(d);
  await fillDetail(tr.dataset.id, c);
}

async function openInPanel(id) { // the open event of a link is not on the first page: show it above the table
  closeDetails();
  const panel = $("#event-panel"); panel.hidden = false; panel.textContent = "Loading…";
  await fillDetail(id, panel, true);
}

async function fillDetail(id, el, closable) {
  try {
    const ev = await (await api("/api/events/" + encodeURIComponent(id))).json();
    el.textContent = "";
    if (closable) {
      const close = document.createElement("button"); close.type = "button"; close.className = "linkbtn close-event";
      close.textContent = "Close"; close.addEventListener("click", () => { closeDetails(); state.event = null; pushUrl(); });
      el.appendChild(close);
    }
    renderDetail(ev, el);
  } catch (e) { el.textContent = "Could not load details: " + e.message; }
}

function jsonText(v) {
  if (v === null || v === undefined) return "—";
  return typeof v === "string" ? v : JSON.stringify(v);
}

function renderDetail(ev, el) {
  const facts = document.createElement("dl"); facts.className = "facts";
  const actor = ev.actor || {}, target = ev.target || {}, req = ev.request || {};
  const t = fmtTime(ev.occurred_at);
  const add = (k, v) => { if (!v) return; const dt = document.createElement("dt"); dt.textContent = k; const dd = document.createElement("dd"); dd.textContent = v; facts.append(dt, dd); };
  add("When", t.local + " · " + t.utc);
  add("Action", ev.action + " (" + ev.event_type + ")");
  add("Target", [target.type, target.id, target.name].filter(Boolean).join(" · "));
  add("Actor", [actor.name || actor.id, actor.email, actor.type].filter(Boolean).join(" · "));
  add("Where", [ev.org_id, ev.project_id, ev.environment_id].filter(Boolean).join(" / "));
  add("Source", ev.source + (ev.status ? " · status " + ev.status : "") + (ev.client_ip ? " · from " + ev.client_ip : ""));
  add("Request", [req.method, req.path].filter(Boolean).join(" "));
  add("Hidden values", (ev.sensitive_paths || []).join(", "));
  el.appendChild(facts);
  const changes = ev.changes || [];
  if (changes.length) {
    const h = document.createElement("h3"); h.textContent = "Changes"; el.appendChild(h);
    const table = document.createElement("table"); table.className = "changes";
    const head = document.createElement("tr");
    for (const name of ["Field", "Before", "After"]) { const th = document.createElement("th"); th.textContent = name; head.appendChild(th); }
    const thead = document.createElement("thead"); thead.appendChild(head); table.appendChild(thead);
    const body = document.createElement("tbody");
    for (const ch of changes) {
      const tr = document.createElement("tr");
      const before = td(jsonText(ch.before), "before"), after = td(jsonText(ch.after), "after");
      for (const cell of [before, after]) if (cell.textContent.startsWith("[sensitive:")) cell.classList.add("sensitive");
      tr.append(td(ch.field, "field"), before, after);
      body.appendChild(tr);
    }
    table.appendChild(body); el.appendChild(table);
  }
  const pre = document.createElement("pre"); pre.className = "json";
  pre.textContent = JSON.stringify(ev, null, 2);
  el.appendChild(pre);
  document.dispatchEvent(new CustomEvent("auditpipe:event-shown", { detail: { event: ev, element: el } }));
}

function seeTarget(ev) {
  for (const n of MULTI.concat(SINGLE)) if (!$("#" + n).readOnly) $("#" + n).value = "";
  $("#target_id").value = ev.target_id;
  if (!state.me || !state.me.scope.org) $("#org").value = ev.org_id;
  state.event = null;
  reload(true);
}

async function loadPage() {
  if (state.loading || state.done) return;
  state.loading = true; showError(null);
  const gen = state.generation;
  const p = params(); p.set("sort", state.sort); p.set("order", state.order);
  if (state.cursor) p.set("cursor", state.cursor);
  const first = !state.cursor;
  try {
    const body = await (await api("/api/events?" + p)).json();
    if (gen !== state.generation) return; // a newer search replaced this one
    const tbody = $("#events tbody");
    for (const ev of body.events) tbody.appendChild(row(ev));
    state.cursor = body.next_cursor; state.done = !body.next_cursor;
    $("#more").hidden = state.done; $("#end").hidden = !state.done;
    $("#summary").textContent = tbody.querySelectorAll("tr.ev").length + " events shown" + (state.view === "triggers" ? " (triggers and webhooks)" : "");
    if (first && state.event) {
      const tr = tbody.querySelector('tr.ev[data-id="' + CSS.escape(state.event) + '"]');
      if (tr) toggle(tr, false); else openInPanel(state.event);
    }
  } catch (e) { showError(e); if (e.status === 401) logout(); }
  finally { if (gen === state.generation) state.loading = false; }
}

async function loadFacets() {
  try {
    const body = await (await api("/api/events/facets?" + params())).json();
    for (const [k, vals] of Object.entries(body.facets)) {
      const dl = $("#dl-" + k); if (!dl) continue;
      dl.textContent = "";
      for (const v of vals) { const o = document.createElement("option"); o.value = v.value; o.label = v.count + " events"; dl.appendChild(o); }
    }
  } catch (_) { /* menus are a convenience */ }
}

// ---------------------------------------------------------------- the timeline
async function loadTimeline() {
  const gen = state.generation;
  const svg = $("#tl-svg");
  const n = Math.max(12, Math.min(120, Math.floor((svg.getBoundingClientRect().width || 900) / 12)));
  const p = params(); p.set("buckets", String(n));
  try {
    const body = await (await api("/api/events/timeline?" + p)).json();
    if (gen !== state.generation) return;
    state.timeline = body;
    drawTimeline(body);
  } catch (e) { $("#tl-label").textContent = "Timeline unavailable: " + e.message; }
}

function intervalText(s) {
  if (s % 86400 === 0) return (s / 86400) + " d";
  if (s % 3600 === 0) return (s / 3600) + " h";
  if (s % 60 === 0) return (s / 60) + " min";
  return s + " s";
}

function drawTimeline(tl) {
  const svg = $("#tl-svg");
  svg.textContent = "";
  const W = tl.buckets.length * 10, H = 60;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  const max = Math.max(1, ...tl.buckets.map(b => b.count));
  tl.buckets.forEach((b, i) => {
    const h = b.count ? Math.max(2, (b.count / max) * (H - 4)) : 0;
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("class", "tl-bar");
    r.setAttribute("x", String(i * 10 + 1)); r.setAttribute("width", "8");
    r.setAttribute("y", String(H - h)); r.setAttribute("height", String(h));
    r.dataset.t = b.t; r.dataset.count = String(b.count);
    const title = document.createElementNS(SVG, "title");
    title.textContent = fmtShort(b.t, tl.interval_s) + ": " + b.count + " events";
    r.appendChild(title);
    svg.appendChild(r);
  });
  const sel = document.createElementNS(SVG, "rect");
  sel.setAttribute("id", "tl-sel"); sel.setAttribute("y", "0"); sel.setAttribute("height", String(H));
  sel.setAttribute("width", "0"); sel.setAttribute("x", "0"); svg.appendChild(sel);
  $("#tl-label").textContent = tl.total + " events · one bar = " + intervalText(tl.interval_s);
  $("#tl-start").textContent = fmtShort(tl.since, tl.interval_s);
  $("#tl-mid").textContent = tl.buckets.length > 2 ? fmtShort(tl.buckets[Math.floor(tl.buckets.length / 2)].t, tl.interval_s) : "";
  $("#tl-end").textContent = fmtShort(tl.until, tl.interval_s);
  $("#tl-clear").hidden = !($("#since").value || $("#until").value);
}

function bucketAt(clientX) {
  const tl = state.timeline; if (!tl || !tl.buckets.length) return null;
  const box = $("#tl-svg").getBoundingClientRect();
  const f = Math.min(0.999999, Math.max(0, (clientX - box.left) / box.width));
  return Math.floor(f * tl.buckets.length);
}

function setupTimelineDrag() {
  const svg = $("#tl-svg");
  let from = null;
  const paint = (a, b) => {
    const sel = $("#tl-sel"); if (!sel) return;
    const lo = Math.min(a, b), hi = Math.max(a, b);
    sel.setAttribute("x", String(lo * 10)); sel.setAttribute("width", String((hi - lo + 1) * 10));
  };
  svg.addEventListener("pointerdown", e => {
    from = bucketAt(e.clientX); if (from === null) return;
    svg.setPointerCapture(e.pointerId); paint(from, from); e.preventDefault();
  });
  svg.addEventListener("pointermove", e => { if (from !== null) paint(from, bucketAt(e.clientX)); });
  svg.addEventListener("pointerup", e => {
    if (from === null) return;
    const to = bucketAt(e.clientX), tl = state.timeline;
    const lo = Math.min(from, to), hi = Math.max(from, to);
    from = null;
    const start = new Date(tl.buckets[lo].t);
    const end = new Date(new Date(tl.buckets[hi].t).getTime() + tl.interval_s * 1000);
    $("#since").value = isoToLocal(start.toISOString());
    $("#until").value = isoToLocal(end.toISOString());
    state.event = null;
    reload(true);
  });
  svg.addEventListener("pointercancel", () => { from = null; paint(0, -1); });
}

// ---------------------------------------------------------------- reload, views, downloads
function reload(push) {
  state.generation += 1;
  state.cursor = null; state.done = false; state.loading = false;
  $("#events tbody").textContent = "";
  closeDetails();
  document.querySelectorAll("th.sortable").forEach(th => {
    th.classList.toggle("sorted", th.dataset.sort === state.sort);
    th.classList.toggle("asc", th.dataset.sort === state.sort && state.order === "asc");
  });
  document.querySelectorAll("#views [role=tab]").forEach(b => b.setAttribute("aria-selected", String(b.dataset.view === state.view)));
  $("#view-hint").hidden = state.view !== "triggers";
  if (push) pushUrl();
  loadPage(); loadFacets(); loadTimeline();
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
  const tbody = $("tbody", sec); tbody.textContent = "";
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
  applyUrl();
  reload(false);
}

$("#token-form").addEventListener("submit", e => {
  e.preventDefault();
  const v = $("#token").value.trim();
  if (v) { sessionStorage.setItem("auditpipe_token", v); $("#token").value = ""; start(); }
});
$("#logout").addEventListener("click", logout);
$("#filters").addEventListener("submit", e => { e.preventDefault(); state.event = null; reload(true); });
$("#filters").addEventListener("change", e => { if (e.target.id !== "q") { state.event = null; reload(true); } });
$("#reset").addEventListener("click", () => {
  for (const n of MULTI.concat(SINGLE, ["since", "until"])) if (!$("#" + n).readOnly) $("#" + n).value = "";
  state.event = null;
  reload(true);
});
$("#tl-clear").addEventListener("click", () => { $("#since").value = ""; $("#until").value = ""; state.event = null; reload(true); });
document.querySelectorAll("th.sortable").forEach(th => th.addEventListener("click", () => {
  if (state.sort === th.dataset.sort) state.order = state.order === "desc" ? "asc" : "desc";
  else { state.sort = th.dataset.sort; state.order = th.dataset.sort === "occurred_at" ? "desc" : "asc"; }
  state.event = null;
  reload(true);
}));
document.querySelectorAll("#views [role=tab]").forEach(b => b.addEventListener("click", () => {
  if (state.view === b.dataset.view) return;
  state.view = b.dataset.view; state.event = null;
  reload(true);
}));
$("#copy-link").addEventListener("click", async () => {
  try { await navigator.clipboard.writeText(location.href); $("#copy-link").textContent = "Link copied"; }
  catch (_) { $("#copy-link").textContent = "Copy the address bar"; }
  setTimeout(() => { $("#copy-link").textContent = "Copy link"; }, 2000);
});
$("#more").addEventListener("click", loadPage);
$("#dl-csv").addEventListener("click", () => download("csv"));
$("#dl-jsonl").addEventListener("click", () => download("jsonl"));
$("#show-archives").addEventListener("click", showArchives);
$("#close-archives").addEventListener("click", () => { $("#archives").hidden = true; });
window.addEventListener("popstate", () => { if (!$("#app").hidden && state.me) { applyUrl(); reload(false); } });
setupTimelineDrag();
new IntersectionObserver(entries => {
  if (entries.some(e => e.isIntersecting) && state.cursor && !$("#app").hidden) loadPage();
}).observe($("#sentinel"));
start();

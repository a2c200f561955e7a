// Integrity indicator of the event list (docs/integrity.md): is the shown range sealed into signed digests,
// when was it last verified, and — for Managers — verify it now. Independent of app.js: it reads the filter
// form and the token the viewer keeps, and refreshes whenever the event list is redrawn.
"use strict";
(() => {
  const box = document.getElementById("integrity-status");
  if (!box) return;
  const $ = s => document.querySelector(s);
  const token = () => sessionStorage.getItem("auditpipe_token") || "";
  let me = null, timer = null, running = false;

  async function call(path) {
    const res = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      const d = body && body.detail;
      const msg = Array.isArray(d) ? d.map(x => (x.loc || []).slice(-1)[0] + ": " + x.msg).join("; ") : (d || res.status + " " + res.statusText);
      throw new Error(msg);
    }
    return body;
  }

  function query() {
    const p = new URLSearchParams();
    const org = ($("#org") && $("#org").value.trim()) || (me && me.scope && me.scope.org) || "";
    if (org) p.set("org", org);
    for (const n of ["since", "until"]) {
      const el = $("#" + n);
      if (el && el.value) p.set(n, new Date(el.value).toISOString());
    }
    return p;
  }

  const when = iso => iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "";

  function show(state, text, title) {
    box.className = "integrity " + state;
    box.hidden = false;
    box.replaceChildren();
    const label = document.createElement("span");
    label.className = "integrity-text";
    label.textContent = text;
    if (title) label.title = title;
    box.appendChild(label);
    if (me && me.roles.includes("Manager") && query().get("org")) {
      const b = document.createElement("button");
      b.type = "button"; b.id = "integrity-verify"; b.textContent = running ? "Verifying…" : "Verify now";
      b.disabled = running;
      b.title = "Recompute this organisation's hashes and check the signed digests (audited)";
      b.addEventListener("click", verifyNow);
      box.appendChild(b);
    }
  }

  async function refresh() {
    if (!token() || document.getElementById("app").hidden) { box.hidden = true; return; }
    try {
      if (!me) me = await call("/api/me");
      const p = query();
      if (!p.get("org")) { show("unknown", "Integrity: choose an organisation to see whether its records are sealed"); return; }
      const st = await call("/api/integrity/status?" + p);
      const sealed = st.sealed_through
        ? (st.range_sealed ? "Sealed" : "Sealed through " + when(st.sealed_through) + " (newer events are sealed once their window closes)")
        : "Not sealed yet";
      const c = st.last_check;
      const checked = c ? (c.ok ? " · verified intact " : " · VERIFICATION FAILED ") + when(c.checked_at) + (c.covers_range ? "" : " (another range)") : " · never verified";
      show(c && !c.ok ? "bad" : (st.sealed_through && c && c.ok ? "good" : "unknown"), sealed + checked, c ? c.summary : "");
    } catch (e) { show("unknown", "Integrity status unavailable: " + e.message); }
  }

  async function verifyNow() {
    running = true; refresh();
    try {
      const r = await call("/api/integrity?" + query());
      running = false;
      await refresh();
      if (!r.ok) {
        const list = document.createElement("ul");
        list.className = "integrity-findings";
        for (const f of r.findings.slice(0, 20)) {
          const li = document.createElement("li");
          li.textContent = f.kind.replace(/_/g, " ") + ": " + (f.event_id || f.window_start || "") + " — " + f.detail;
          list.appendChild(li);
        }
        box.appendChild(list);
      }
    } catch (e) { running = false; show("bad", "Verification could not run: " + e.message); }
  }

  const later = () => { clearTimeout(timer); timer = setTimeout(refresh, 300); };
  const tbody = document.querySelector("#events tbody");
  if (tbody) new MutationObserver(later).observe(tbody, { childList: true });
  const form = document.getElementById("filters");
  if (form) form.addEventListener("change", later);
  const logout = document.getElementById("logout");
  if (logout) logout.addEventListener("click", () => { me = null; box.hidden = true; });
  later();
})();

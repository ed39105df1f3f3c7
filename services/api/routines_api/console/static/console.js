// Routines board console. Plain JS, no build step; talks to the JSON API of the same origin
// with the session cookie and the CSRF token from <meta name="csrf-token">.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.details = body && body.details;
  }
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") init.headers["X-CSRF-Token"] = meta("csrf-token");
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    window.location.assign("/console/login");
    throw new ApiError(401, { error: "signed out" });
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function errorText(error) {
  if (!(error instanceof ApiError)) return String(error);
  const details = Array.isArray(error.details)
    ? error.details.map((d) => (d.field ? `${d.field}: ${d.message}` : JSON.stringify(d))).join("; ")
    : error.details ? JSON.stringify(error.details) : "";
  return details ? `${error.message} (${details})` : error.message;
}

function flash(message, kind = "ok") {
  const box = $("#flash");
  if (!box) return;
  box.className = `flash ${kind}`;
  box.textContent = message;
}

function fmt(iso, zone) {
  if (!iso) return "—";
  const options = { dateStyle: "medium", timeStyle: "short", timeZone: zone || "UTC" };
  try {
    return new Intl.DateTimeFormat(undefined, options).format(new Date(iso));
  } catch (_) {
    return new Intl.DateTimeFormat(undefined, { ...options, timeZone: "UTC" }).format(new Date(iso));
  }
}

function relative(iso) {
  if (!iso) return "";
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  const [value, unit] =
    abs < 90 ? [Math.round(seconds), "second"]
    : abs < 5400 ? [Math.round(seconds / 60), "minute"]
    : abs < 129600 ? [Math.round(seconds / 3600), "hour"]
    : [Math.round(seconds / 86400), "day"];
  return new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }).format(value, unit);
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || text}`, text });
}

// --- company context ---------------------------------------------------------------------

async function companyId() {
  if (meta("company-id")) return meta("company-id");
  const select = $("#company-select");
  const companies = await api("GET", "/api/companies");
  const remembered = localStorage.getItem("console.company");
  select.replaceChildren(...companies.map((c) => el("option", { value: c.id, text: c.name })));
  const chosen = companies.find((c) => c.id === remembered) || companies[0];
  if (!chosen) throw new Error("no company yet: create one with the API first");
  select.value = chosen.id;
  select.addEventListener("change", () => {
    localStorage.setItem("console.company", select.value);
    window.location.reload();
  });
  return chosen.id;
}

async function directory(cid) {
  const [agents, projects] = await Promise.all([
    api("GET", `/api/companies/${cid}/agents`),
    api("GET", `/api/companies/${cid}/projects`),
  ]);
  return {
    agents, projects,
    agentName: Object.fromEntries(agents.map((a) => [a.id, a.name])),
    projectName: Object.fromEntries(projects.map((p) => [p.id, p.name])),
  };
}

async function loadZones() {
  const list = $("#zones");
  if (!list || list.children.length) return;
  const zones = await (await fetch("/console/timezones.json", { credentials: "same-origin" })).json();
  list.replaceChildren(...zones.map((z) => el("option", { value: z })));
}

// --- routines list -----------------------------------------------------------------------

async function pageRoutines() {
  const box = $("#routine-list");
  const cid = await companyId();
  const [routines, dir] = await Promise.all([api("GET", `/api/companies/${cid}/routines`), directory(cid)]);
  $("#filter-project").append(...dir.projects.map((p) => el("option", { value: p.id, text: p.name })));
  $("#filter-agent").append(...dir.agents.map((a) => el("option", { value: a.id, text: a.name })));
  const groupBy = $("#group-by");
  groupBy.value = localStorage.getItem("console.groupBy") || "none";
  const extras = new Map();
  await Promise.all(routines.map(async (r) => {
    const [detail, runs] = await Promise.all([
      api("GET", `/api/routines/${r.id}`),
      api("GET", `/api/routines/${r.id}/runs?limit=1`),
    ]);
    const next = detail.triggers.filter((t) => t.enabled && t.nextRunAt)
      .sort((a, b) => a.nextRunAt.localeCompare(b.nextRunAt))[0];
    extras.set(r.id, { next, last: runs[0] });
  }));

  function row(r) {
    const { next, last } = extras.get(r.id) || {};
    const toggle = el("input", {
      type: "checkbox", role: "switch", checked: r.status === "active", disabled: r.status === "archived",
      "aria-label": `${r.title}: ${r.status === "active" ? "on" : "off"}`,
      onchange: async (event) => {
        try {
          const updated = await api("PATCH", `/api/routines/${r.id}`, { status: event.target.checked ? "active" : "paused" });
          Object.assign(r, updated);
          flash(`${r.title} is now ${r.status}.`);
          render();
        } catch (error) { flash(errorText(error), "error"); event.target.checked = !event.target.checked; }
      },
    });
    const actions = el("div", { class: "row-actions" },
      el("button", { type: "button", text: "Run now", onclick: async () => {
        try {
          const run = await api("POST", `/api/routines/${r.id}/run`, { payload: {} });
          flash(`Run ${run.id.slice(0, 8)}: ${run.status}.`);
        } catch (error) { flash(errorText(error), "error"); }
      } }),
      r.status !== "archived" ? el("button", { type: "button", class: "danger", text: "Archive", onclick: async () => {
        if (!window.confirm(`Archive “${r.title}”? Archived routines never fire again.`)) return;
        try { Object.assign(r, await api("PATCH", `/api/routines/${r.id}`, { status: "archived" })); render(); }
        catch (error) { flash(errorText(error), "error"); }
      } }) : null);
    return el("tr", {},
      el("td", {}, el("label", { class: "switch" }, toggle)),
      el("td", {}, el("a", { href: `/console/routines/${r.id}`, text: r.title }), " ",
        r.status !== "active" ? badge(r.status) : null),
      el("td", { text: dir.agentName[r.assigneeAgentId] || "—" }),
      el("td", { text: dir.projectName[r.projectId] || "—" }),
      el("td", {}, next ? [fmt(next.nextRunAt, next.timezone), el("small", { text: ` (${next.timezone}) ${relative(next.nextRunAt)}` })] : "—"),
      el("td", {}, last ? [badge(last.status), el("small", { text: ` ${relative(last.triggeredAt)}` })] : "never"),
      el("td", {}, actions));
  }

  function render() {
    const term = $("#search").value.trim().toLowerCase();
    const status = $("#filter-status").value, project = $("#filter-project").value, agent = $("#filter-agent").value;
    const shown = routines.filter((r) =>
      (!term || `${r.title} ${r.description || ""}`.toLowerCase().includes(term)) &&
      (!status || r.status === status) && (!project || r.projectId === project) &&
      (!agent || r.assigneeAgentId === agent));
    const key = groupBy.value;
    const groups = new Map();
    for (const r of shown) {
      const name = key === "project" ? dir.projectName[r.projectId] : key === "agent" ? dir.agentName[r.assigneeAgentId] : "";
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push(r);
    }
    const head = el("tr", {}, ...["On", "Routine", "Agent", "Project", "Next fire", "Last run", "Actions"].map((h) => el("th", { scope: "col", text: h })));
    const tables = [...groups.entries()].map(([name, items]) => el("section", {},
      name ? el("h2", { text: name }) : null,
      el("table", { class: "list" }, el("thead", {}, head.cloneNode(true)), el("tbody", {}, items.map(row)))));
    box.replaceChildren(...(tables.length ? tables : [el("p", { text: "No routines match." })]));
    box.setAttribute("aria-busy", "false");
  }

  for (const id of ["#search", "#filter-status", "#filter-project", "#filter-agent", "#group-by"]) {
    $(id).addEventListener("input", () => {
      if (id === "#group-by") localStorage.setItem("console.groupBy", groupBy.value);
      render();
    });
  }
  render();
}

// --- cron editor -------------------------------------------------------------------------

function cronEditor(root) {
  const q = (sel) => $(sel, root);
  const preset = q("#cron-preset"), expr = q("#cron-expression"), zone = q("#cron-timezone");
  const out = q("#cron-preview");
  let timer = null, latest = 0;

  function fromPreset() {
    const [hh, mm] = (q("#cron-time").value || "09:00").split(":").map(Number);
    switch (preset.value) {
      case "minutes": return `*/${q("#cron-every").value || 15} * * * *`;
      case "hourly": return `${q("#cron-minute").value || 0} * * * *`;
      case "daily": return `${mm} ${hh} * * *`;
      case "weekdays": return `${mm} ${hh} * * 1-5`;
      case "weekly": return `${mm} ${hh} * * ${q("#cron-weekday").value}`;
      case "monthly": return `${mm} ${hh} ${q("#cron-day").value || 1} * *`;
      default: return expr.value;
    }
  }
  function showFields() {
    for (const field of $$(".preset-field", root)) field.hidden = !field.dataset.for.split(" ").includes(preset.value);
    expr.readOnly = preset.value !== "custom";
  }
  async function preview() {
    const id = ++latest;
    if (!zone.value) {
      out.replaceChildren(el("p", { class: "hint", text: "Choose a time zone to see when it fires." }));
      return;
    }
    try {
      const result = await api("POST", "/api/cron/preview", { cronExpression: expr.value, timezone: zone.value, count: 8 });
      if (id !== latest) return;
      const rows = result.fires.map((f) => el("tr", {},
        el("td", { text: f.local }), el("td", { text: f.utc }),
        el("td", { text: f.dst ? (f.dst.note || f.dst.kind || JSON.stringify(f.dst)) : f.shiftedFrom ? `moved from ${f.shiftedFrom}` : "" })));
      out.replaceChildren(
        ...(result.description ? [el("p", { class: "description", text: result.description })] : []),
        el("table", { class: "fires", "aria-label": "Next fires" },
          el("thead", {}, el("tr", {}, el("th", { scope: "col", text: `Local (${zone.value})` }), el("th", { scope: "col", text: "UTC" }), el("th", { scope: "col", text: "Daylight saving" }))),
          el("tbody", {}, rows)));
      expr.setCustomValidity("");
    } catch (error) {
      if (id !== latest) return;
      out.replaceChildren(el("p", { class: "error", role: "alert", text: errorText(error) }));
      expr.setCustomValidity(errorText(error));
    }
  }
  function changed() {
    if (preset.value !== "custom") expr.value = fromPreset();
    clearTimeout(timer);
    timer = setTimeout(preview, 250);
  }
  preset.addEventListener("change", () => { showFields(); changed(); });
  for (const input of $$("input, select", root)) if (input !== preset) input.addEventListener("input", changed);
  showFields();
  expr.value = fromPreset();
  loadZones();
  return { value: () => ({ cronExpression: expr.value, timezone: zone.value }), refresh: changed };
}

// --- new routine -------------------------------------------------------------------------

async function pageNew() {
  const cid = await companyId();
  const dir = await directory(cid);
  $("#f-agent").replaceChildren(...dir.agents.filter((a) => a.status !== "terminated").map((a) => el("option", { value: a.id, text: a.name })));
  $("#f-project").replaceChildren(...dir.projects.map((p) => el("option", { value: p.id, text: p.name })));
  const editor = cronEditor($("#cron-editor"));
  $("#with-schedule").addEventListener("change", (e) => { $("#cron-editor").hidden = !e.target.checked; });
  $("#new-routine").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const body = {};
    for (const key of ["title", "description", "assigneeAgentId", "projectId", "priority", "concurrencyPolicy", "catchUpPolicy"]) {
      const value = form.get(key);
      if (value) body[key] = value;
    }
    try {
      const routine = await api("POST", `/api/companies/${cid}/routines`, body);
      if ($("#with-schedule").checked) {
        await api("POST", `/api/routines/${routine.id}/triggers`, { kind: "schedule", ...editor.value() });
      }
      window.location.assign(`/console/routines/${routine.id}`);
    } catch (error) {
      $("#form-error").textContent = errorText(error);
    }
  });
}

// --- routine detail ----------------------------------------------------------------------

function curlExample(trigger, secret) {
  const url = trigger.webhookUrl || `/api/routine-triggers/public/${trigger.publicId}/fire`;
  const s = secret || "$SECRET";
  const body = `BODY='{"event":"test"}'`;
  switch (trigger.signingMode) {
    case "bearer":
      return `${body}\ncurl -X POST '${url}' -H 'Content-Type: application/json' \\\n  -H "Authorization: Bearer ${s}" -d "$BODY"`;
    case "github_hmac":
      return `${body}\nSIG=$(printf '%s' "$BODY" | openssl dgst -sha256 -hmac '${s}' | sed 's/^.* //')\n` +
        `curl -X POST '${url}' -H 'Content-Type: application/json' \\\n  -H "X-Hub-Signature-256: sha256=$SIG" -H "X-GitHub-Delivery: $(uuidgen)" -d "$BODY"`;
    case "standard_webhooks":
      return `${body}\nID=msg_$(date +%s%N); TS=$(date +%s)\nKEY=$(printf '%s' '${s}' | sed 's/^whsec_//' | base64 -d | xxd -p -c 256)\n` +
        `SIG=$(printf '%s' "$ID.$TS.$BODY" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY -binary | base64)\n` +
        `curl -X POST '${url}' -H 'Content-Type: application/json' \\\n  -H "webhook-id: $ID" -H "webhook-timestamp: $TS" -H "webhook-signature: v1,$SIG" -d "$BODY"`;
    default:
      return `${body}\nTS=$(date +%s)\nSIG=$(printf '%s' "$TS.$BODY" | openssl dgst -sha256 -hmac '${s}' | sed 's/^.* //')\n` +
        `curl -X POST '${url}' -H 'Content-Type: application/json' \\\n  -H "X-Paperclip-Timestamp: $TS" -H "X-Paperclip-Signature: sha256=$SIG" -d "$BODY"`;
  }
}

function copyButton(text, label) {
  return el("button", { type: "button", class: "small", text: label || "Copy", onclick: async (e) => {
    try { await navigator.clipboard.writeText(text); e.target.textContent = "Copied"; }
    catch (_) { e.target.textContent = "Select and copy"; }
  } });
}

async function pageRoutine() {
  const id = document.body.dataset.routineid;
  let routine = await api("GET", `/api/routines/${id}`);
  const tabs = $$('[role="tab"]');
  function select(tab) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(`#${t.getAttribute("aria-controls")}`).hidden = !on;
    }
    tab.focus();
  }
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
      if (step) select(tabs[(i + step + tabs.length) % tabs.length]);
    });
  });

  function header() {
    $("#routine-title").textContent = routine.title;
    document.title = `${routine.title} · Routines console`;
    $("#routine-badges").replaceChildren(badge(routine.status), badge(routine.concurrencyPolicy, "policy"));
    const toggle = $("#toggle-status");
    toggle.textContent = routine.status === "active" ? "Pause" : "Resume";
    toggle.disabled = routine.status === "archived";
    $("#archive").disabled = routine.status === "archived";
    $("#e-title").value = routine.title;
    $("#e-description").value = routine.description || "";
    $("#e-priority").value = routine.priority;
    $("#e-policy").value = routine.concurrencyPolicy;
    $("#e-catchup").value = routine.catchUpPolicy;
  }
  async function reload() { routine = await api("GET", `/api/routines/${id}`); header(); renderTriggers(); }

  $("#toggle-status").addEventListener("click", async () => {
    try {
      await api("PATCH", `/api/routines/${id}`, { status: routine.status === "active" ? "paused" : "active" });
      await reload();
      flash(`Routine ${routine.status === "active" ? "resumed" : "paused"}.`);
    } catch (error) { flash(errorText(error), "error"); }
  });
  $("#archive").addEventListener("click", async () => {
    if (!window.confirm("Archive this routine? It will never fire again.")) return;
    try { await api("PATCH", `/api/routines/${id}`, { status: "archived" }); await reload(); }
    catch (error) { flash(errorText(error), "error"); }
  });
  $("#edit-routine").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    try {
      await api("PATCH", `/api/routines/${id}`, Object.fromEntries(form.entries()));
      await reload();
      flash("Saved.");
    } catch (error) { flash(errorText(error), "error"); }
  });

  function showSecret(trigger, secret, what) {
    const banner = $("#secret-banner");
    banner.hidden = false;
    banner.replaceChildren(
      el("p", {}, el("strong", { text: `${what}: copy this secret now.` }), " It is shown once and cannot be shown again."),
      el("code", { class: "secret", text: secret }), " ", copyButton(secret),
      el("p", { text: "Signed request example:" }),
      el("pre", { text: curlExample(trigger, secret) }));
  }

  async function triggerCard(t) {
    const rows = [];
    if (t.kind === "schedule") {
      let fires = [];
      try {
        fires = (await api("POST", "/api/cron/preview", { cronExpression: t.cronExpression, timezone: t.timezone, count: 5 })).fires;
      } catch (_) { /* shown as an error below */ }
      rows.push(el("p", {}, el("code", { text: t.cronExpression }), ` in ${t.timezone}`,
        t.description ? el("span", { class: "description", text: ` — ${t.description}` }) : null));
      rows.push(el("p", { text: `Next: ${t.nextRunAt ? `${fmt(t.nextRunAt, t.timezone)} (${relative(t.nextRunAt)})` : "not scheduled"}` }));
      rows.push(el("table", { class: "fires", "aria-label": "Next fires" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col", text: `Local (${t.timezone})` }), el("th", { scope: "col", text: "UTC" }), el("th", { scope: "col", text: "Daylight saving" }))),
        el("tbody", {}, fires.map((f) => el("tr", {}, el("td", { text: f.local }), el("td", { text: f.utc }),
          el("td", { text: f.dst ? (f.dst.note || f.dst.kind || JSON.stringify(f.dst)) : "" }))))));
    }
    if (t.kind === "webhook") {
      const url = t.webhookUrl || "";
      rows.push(el("p", {}, "URL ", el("code", { class: "url", text: url }), " ", copyButton(url, "Copy URL")));
      rows.push(el("p", { text: `Signing: ${t.signingMode}; replay window ${t.replayWindowSec}s` }));
      rows.push(el("details", {}, el("summary", { text: "Signed curl example" }), el("pre", { text: curlExample(t) })));
      const grace = el("input", { type: "number", min: 0, max: 86400, value: 0, "aria-label": "Grace period in seconds", class: "narrow" });
      rows.push(el("div", { class: "row-actions" }, el("label", {}, "Old secret valid for ", grace, " s"),
        el("button", { type: "button", text: "Rotate secret", onclick: async () => {
          try {
            const rotated = await api("POST", `/api/routine-triggers/${t.id}/rotate-secret`, { graceSec: Number(grace.value || 0) });
            showSecret(t, rotated.secret, "Secret rotated");
          } catch (error) { flash(errorText(error), "error"); }
        } })));
    }
    const toggle = el("button", { type: "button", text: t.enabled ? "Disable" : "Enable", onclick: async () => {
      try { await api("PATCH", `/api/routine-triggers/${t.id}`, { enabled: !t.enabled }); await reload(); }
      catch (error) { flash(errorText(error), "error"); }
    } });
    const remove = el("button", { type: "button", class: "danger", text: "Delete", onclick: async () => {
      if (!window.confirm("Delete this trigger? Its runs keep their history.")) return;
      try { await api("DELETE", `/api/routine-triggers/${t.id}`); await reload(); }
      catch (error) { flash(errorText(error), "error"); }
    } });
    return el("article", { class: "card trigger", "data-trigger-id": t.id },
      el("h3", {}, `${t.label || t.kind} `, badge(t.kind, "kind"), t.enabled ? null : badge("disabled")),
      ...rows, el("div", { class: "row-actions" }, toggle, remove));
  }

  async function renderTriggers() {
    const cards = await Promise.all(routine.triggers.map(triggerCard));
    $("#trigger-list").replaceChildren(...(cards.length ? cards : [el("p", { text: "No triggers yet." })]));
  }

  const editorRoot = $("#cron-editor");
  const editor = cronEditor(editorRoot);
  $("#t-kind").addEventListener("change", (e) => {
    $("#t-schedule").hidden = e.target.value !== "schedule";
    $("#t-mode-label").hidden = e.target.value !== "webhook";
  });
  $("#add-trigger").addEventListener("submit", async (event) => {
    event.preventDefault();
    const kind = $("#t-kind").value;
    const body = { kind };
    if ($("#t-label").value) body.label = $("#t-label").value;
    if (kind === "schedule") Object.assign(body, editor.value());
    if (kind === "webhook") body.signingMode = $("#t-mode").value;
    try {
      const created = await api("POST", `/api/routines/${id}/triggers`, body);
      await reload();
      if (created.secret) showSecret(created, created.secret, "Webhook created");
      flash("Trigger added.");
    } catch (error) { flash(errorText(error), "error"); }
  });

  // Runs: the ledger, refreshed every two seconds while visible.
  let limit = 25;
  async function renderRuns() {
    const runs = await api("GET", `/api/routines/${id}/runs?limit=${limit}`);
    const head = el("tr", {}, ...["Status", "Source", "Scheduled", "Triggered", "Decided", "Lag", "Issue", "Note"].map((h) => el("th", { scope: "col", text: h })));
    $("#run-list").replaceChildren(el("table", { class: "list runs" }, el("thead", {}, head), el("tbody", {}, runs.map((r) => {
      const lag = r.scheduledFor ? `${((new Date(r.triggeredAt) - new Date(r.scheduledFor)) / 1000).toFixed(2)} s` : "";
      return el("tr", { "data-run-id": r.id },
        el("td", {}, badge(r.status)), el("td", { text: r.source }),
        el("td", { text: r.scheduledFor ? fmt(r.scheduledFor) + " UTC" : "" }), el("td", { text: fmt(r.triggeredAt) + " UTC" }),
        el("td", { text: r.decidedAt ? fmt(r.decidedAt) + " UTC" : "" }), el("td", { text: lag }),
        el("td", {}, r.linkedIssueId ? el("code", { class: "issue-id", text: r.linkedIssueId.slice(0, 8) }) : ""),
        el("td", { text: r.failureReason || (r.coalescedIntoRunId ? `coalesced into ${r.coalescedIntoRunId.slice(0, 8)}` : "") }));
    }))));
    $("#more-runs").hidden = runs.length < limit;
  }
  $("#more-runs").addEventListener("click", () => { limit = Math.min(limit * 2, 500); renderRuns(); });
  setInterval(() => { if (!$("#panel-runs").hidden && !document.hidden) renderRuns().catch(() => {}); }, 2000);

  $("#run-now").addEventListener("submit", async (event) => {
    event.preventDefault();
    let payload;
    try {
      payload = JSON.parse($("#run-payload").value || "{}");
      if (payload === null || typeof payload !== "object" || Array.isArray(payload)) throw new Error("the payload must be a JSON object");
      $("#payload-error").textContent = "";
    } catch (error) {
      $("#payload-error").textContent = `Invalid payload: ${error.message}`;
      return;
    }
    try {
      const run = await api("POST", `/api/routines/${id}/run`, { payload });
      $("#run-result").replaceChildren(el("p", {}, "Run ", el("code", { text: run.id.slice(0, 8) }), " ", badge(run.status)));
      renderRuns();
    } catch (error) { $("#payload-error").textContent = errorText(error); }
  });

  // Health: expected slots vs runs per schedule trigger, lag, outcomes, streaks, open issue age.
  async function renderHealth() {
    const h = await api("GET", `/api/routines/${id}/health?days=${$("#health-days").value}`);
    const rows = h.triggers.map((t) => el("tr", {},
      el("td", {}, el("code", { text: t.cronExpression }), ` ${t.timezone}`),
      el("td", { text: `${t.expectedSlots}${t.expectedSlotsAtLeast ? "+" : ""}` }),
      el("td", { text: t.onTime }), el("td", { text: t.late }), el("td", { text: t.missedSkipped }),
      el("td", { text: t.unaccounted }),
      el("td", { text: t.lagSeconds && t.lagSeconds.p50 !== null && t.lagSeconds.p50 !== undefined ? `${t.lagSeconds.p50} / ${t.lagSeconds.p99} s` : "—" })));
    const outcomes = Object.entries(h.runsByStatus || {}).map(([k, n]) => el("li", {}, badge(k), ` ${n}`));
    $("#health").replaceChildren(
      el("table", { class: "list", "aria-label": "Schedule health" },
        el("thead", {}, el("tr", {}, ...["Schedule", "Expected", "On time", "Late", "Missed", "Unaccounted", "Lag p50 / p99"].map((x) => el("th", { scope: "col", text: x })))),
        el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", { colspan: 7, text: "No schedule triggers." }))])),
      el("h3", { text: "Runs by status" }), el("ul", { class: "inline" }, outcomes.length ? outcomes : [el("li", { text: "none" })]),
      el("p", { text: `Consecutive failures: ${h.failureStreak}${h.failureAlertAfter ? ` (alert after ${h.failureAlertAfter})` : ""}` }),
      h.openIssue ? el("p", { text: `Open execution issue: ${h.openIssue.status}, open ${Math.round((h.openIssue.ageSec || 0) / 60)} min` }) : el("p", { text: "No open execution issue." }));
  }
  $("#health-days").addEventListener("change", () => renderHealth().catch((e) => flash(errorText(e), "error")));
  $("#tab-health").addEventListener("click", () => renderHealth().catch((e) => flash(errorText(e), "error")));

  // History: revisions (restore one) and the activity log.
  async function renderHistory() {
    const [revisions, activity] = await Promise.all([
      api("GET", `/api/routines/${id}/revisions?limit=20`),
      api("GET", `/api/routines/${id}/activity?limit=50`),
    ]);
    $("#revisions").replaceChildren(el("table", { class: "list" },
      el("thead", {}, el("tr", {}, ...["#", "When", "Who", "Changed", ""].map((x) => el("th", { scope: "col", text: x })))),
      el("tbody", {}, revisions.map((r, i) => el("tr", {},
        el("td", { text: r.number }), el("td", { text: fmt(r.createdAt) + " UTC" }), el("td", { text: r.actorKind }),
        el("td", { text: Object.keys(r.changes || {}).join(", ") || (r.restoredFrom ? "restored" : "created") }),
        el("td", {}, i === 0 ? "current" : el("button", { type: "button", class: "small", text: `Restore #${r.number}`, onclick: async () => {
          if (!window.confirm(`Restore revision #${r.number}?`)) return;
          try { await api("POST", `/api/routines/${id}/revisions/${r.id}/restore`); await reload(); await renderHistory(); flash(`Restored revision #${r.number}.`); }
          catch (error) { flash(errorText(error), "error"); }
        } })))))));
    $("#activity").replaceChildren(el("ul", { class: "activity" }, activity.map((a) =>
      el("li", {}, el("time", { datetime: a.at, text: fmt(a.at) + " UTC" }), " ", el("strong", { text: a.action }), ` by ${a.actorKind}`))));
  }
  $("#tab-history").addEventListener("click", () => renderHistory().catch((e) => flash(errorText(e), "error")));

  header();
  await Promise.all([renderTriggers(), renderRuns()]);
}

// --- calendar ----------------------------------------------------------------------------

async function pageCalendar() {
  const cid = await companyId();
  await loadZones();
  const zoneInput = $("#calendar-zone");
  zoneInput.value = localStorage.getItem("console.calendarZone") || "UTC";
  let start = new Date();
  start.setUTCHours(0, 0, 0, 0);
  const routines = await api("GET", `/api/companies/${cid}/routines?status=active`);

  async function render() {
    const end = new Date(start.getTime() + 7 * 86400000);
    $("#week-label").textContent = `${fmt(start.toISOString(), "UTC")} – ${fmt(end.toISOString(), "UTC")} (UTC days)`;
    const params = new URLSearchParams({ from: start.toISOString(), to: end.toISOString() });
    const upcoming = await api("GET", `/api/companies/${cid}/upcoming?${params}`);
    const titles = Object.fromEntries(routines.map((r) => [r.id, r]));
    const fires = upcoming.fires.map((f) => ({ at: new Date(f.utc), routine: titles[f.routineId] || { id: f.routineId, title: f.routineId }, fire: f }));
    fires.sort((a, b) => a.at - b.at);
    const zone = zoneInput.value || "UTC";
    const days = [...Array(7).keys()].map((i) => new Date(start.getTime() + i * 86400000));
    $("#calendar").replaceChildren(...days.map((day) => {
      const next = new Date(day.getTime() + 86400000);
      const items = fires.filter((f) => f.at >= day && f.at < next);
      return el("section", { class: "day" }, el("h2", { text: new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric", timeZone: "UTC" }).format(day) }),
        items.length ? el("ul", {}, items.slice(0, 50).map((f) => el("li", {},
          el("time", { datetime: f.at.toISOString(), text: new Intl.DateTimeFormat(undefined, { timeStyle: "short", timeZone: zone }).format(f.at) }), " ",
          el("a", { href: `/console/routines/${f.routine.id}`, text: f.routine.title }),
          f.fire.dst ? el("small", { text: " (DST)" }) : null)),
          items.length > 50 ? el("li", { text: `…and ${items.length - 50} more` }) : null) : el("p", { class: "hint", text: "Nothing scheduled" }));
    }));
    $("#calendar").setAttribute("aria-busy", "false");
  }
  $("#prev-week").addEventListener("click", () => { start = new Date(start.getTime() - 7 * 86400000); render(); });
  $("#next-week").addEventListener("click", () => { start = new Date(start.getTime() + 7 * 86400000); render(); });
  zoneInput.addEventListener("change", () => { localStorage.setItem("console.calendarZone", zoneInput.value); render(); });
  await render();
}

const PAGES = { routines: pageRoutines, new: pageNew, routine: pageRoutine, calendar: pageCalendar };

document.addEventListener("DOMContentLoaded", () => {
  const page = PAGES[document.body.dataset.page];
  if (page) page().catch((error) => flash(errorText(error), "error"));
});

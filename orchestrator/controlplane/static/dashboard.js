// The dashboard: polls /api/v1/state every second and draws it; controls call the REST API.
"use strict";

// variants coloured from cheap (warm) to accurate (cool), in accuracy order
const PALETTE = ["#f28e2b", "#e1b12c", "#59a14f", "#4e79a7", "#2b3f73", "#b07aa1", "#9c755f", "#76b7b2"];
const state = { data: null, variantColors: {}, preview: null, settingsDrawn: false, family: null, busy: false };
const $ = id => document.getElementById(id);

function colorOf(variant) {
  if (!state.variantColors[variant]) {
    const names = Object.keys(state.data ? state.data.accuracy : {}).sort((a, b) => state.data.accuracy[a] - state.data.accuracy[b]);
    const i = names.indexOf(variant);
    state.variantColors[variant] = PALETTE[(i >= 0 ? i : Object.keys(state.variantColors).length) % PALETTE.length];
  }
  return state.variantColors[variant];
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "style") e.style.cssText = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function token() { return $("token").value.trim(); }

function say(text, isError) {
  const m = $("message");
  m.textContent = text || "";
  m.className = "message" + (text ? " show" : "") + (isError ? " error" : "");
}

// One API call; resolves to the JSON body, rejects with the server's person-readable message.
async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (method !== "GET") {
    if (!token()) throw new Error("enter the control plane's token (top right) to make changes");
    headers.Authorization = "Bearer " + token();
  }
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = {};
  try { data = await resp.json(); } catch (e) { data = { error: `HTTP ${resp.status}` }; }
  if (!resp.ok) throw new Error(data.error || `HTTP ${resp.status}`);
  return data;
}

async function act(label, fn) {
  if (state.busy) return;
  state.busy = true;
  document.body.style.cursor = "progress";
  say(label + " …");
  try {
    const msg = await fn();
    say(msg || label + ": done");
  } catch (e) {
    say(label + " failed: " + e.message, true);
  } finally {
    state.busy = false;
    document.body.style.cursor = "";
    refresh();
  }
}

// -- drawing -------------------------------------------------------------------------------
function drawHeader(d) {
  const plan = d.plan;
  $("kpi-plan").textContent = plan ? `v${plan.version} · ${plan.policy}` : "none";
  const fams = plan ? Object.values(plan.families) : [];
  const demand = fams.reduce((a, f) => a + f.demand_rps, 0);
  const acc = demand ? fams.reduce((a, f) => a + f.effective_accuracy * f.demand_rps, 0) / demand : 0;
  $("kpi-acc").textContent = plan ? acc.toFixed(1) + " %" : "–";
  const est = Object.values(d.estimates || {}).reduce((a, v) => a + v, 0);
  $("kpi-demand").textContent = est.toFixed(1) + " rps";
  $("kpi-controller").textContent = (d.controller.auto ? "auto" : "manual") + (d.controller.busy ? " · applying" : "");
  drawClients(d.clients || []);
  drawSpeed(d.speed || { rows: [] });
}

// How fast the devices really run: batches that ran alone, against the profile (controlplane/speed.py).
function drawSpeed(speed) {
  $("speed-meta").textContent = speed.planned_with ? "planned with" : "shown only (--no-observed-speed)";
  const body = $("speed");
  body.replaceChildren();
  if (!speed.rows.length) {
    body.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "no batch has run alone on a device yet")));
    return;
  }
  for (const r of speed.rows) {
    const factor = r.factor.toFixed(2) + "×" + (r.planned_factor !== r.factor ? ` (plan: ${r.planned_factor.toFixed(2)}×)` : "");
    const cap = r.profiled_capacity_rps === undefined ? "–" :
      `${r.profiled_capacity_rps.toFixed(1)} → ${r.observed_capacity_rps.toFixed(1)} (batch ${r.batch_cap})`;
    body.append(el("tr", { class: r.factor > 1 ? "slow" : "" }, el("td", {}, r.device_class), el("td", {}, r.variant),
                   el("td", {}, factor), el("td", {}, cap), el("td", {}, String(Math.round(r.batches)))));
  }
}

// Who sends the traffic: per kind (gateway, shim), how many report and their request rate.
function drawClients(clients) {
  const kinds = {};
  for (const c of clients) {
    const k = kinds[c.kind] || (kinds[c.kind] = { n: 0, rps: 0 });
    k.n += 1;
    k.rps += c.requests_per_s;
  }
  const parts = Object.keys(kinds).sort().map(kind =>
    `${kinds[kind].n} ${kind}${kinds[kind].n === 1 ? "" : "s"} · ${kinds[kind].rps.toFixed(1)} req/s`);
  const box = $("kpi-clients");
  box.textContent = parts.length ? parts.join(", ") : "no clients";
  box.title = clients.map(c => `${c.id} (${c.kind}): ${c.requests_per_s} req/s`).join("\n");
}

function drawDevices(d) {
  const box = $("devices");
  box.replaceChildren();
  for (const dev of d.devices) {
    const chips = el("div", {});
    for (const m of dev.models) {
      const ready = m.state === "READY";
      if (!ready && m.state !== "LOADING") continue;
      const chip = el("span", { class: "chip" + (ready ? "" : " loading"), style: `background:${colorOf(m.name)}`,
        "data-device": dev.id, "data-variant": m.name, title: m.reason || m.state }, m.name + (ready ? "" : " (loading)"));
      if (ready) {
        chip.append(el("button", { type: "button", title: `unload ${m.name} from ${dev.id}`, "aria-label": `unload ${m.name}`,
          onclick: () => act(`unload ${m.name} from ${dev.id}`,
            () => api("POST", `/api/v1/devices/${dev.id}/models/${m.name}/unload`).then(() => `${m.name} unloaded from ${dev.id}`)) }, "×"));
      }
      chips.append(chip);
    }
    if (!chips.children.length) chips.append(el("span", { class: "muted" }, dev.live ? "nothing loaded" : ""));
    const status = dev.live ? "up" : "down";
    box.append(el("div", { class: "device", "data-device": dev.id },
      el("div", { class: "head" }, el("span", { class: "dot" + (dev.live ? " up" : ""), title: status }),
        el("strong", {}, dev.id), el("span", { class: "muted" },
          `${dev.kind} · ${dev.class} · ${dev.memory_mb.toFixed(0)} MB` + (dev.drained ? " · drained" : "") +
          (dev.live ? "" : " · does not answer"))),
      chips));
  }
  fillSelect($("load-device"), d.devices.map(x => x.id));
  fillSelect($("load-variant"), Object.keys(d.accuracy).sort((a, b) => d.accuracy[a] - d.accuracy[b]));
}

function fillSelect(sel, values) {
  const current = Array.from(sel.options).map(o => o.value);
  if (current.join() === values.join()) return;
  const keep = sel.value;
  sel.replaceChildren(...values.map(v => el("option", { value: v }, v)));
  if (values.includes(keep)) sel.value = keep;
}

function drawPlan(d) {
  const plan = d.plan, box = $("plan-bars");
  box.replaceChildren();
  if (!plan) {
    box.append(el("p", { class: "muted" }, "No plan yet: the controller plans once traffic arrives, or solve and apply below."));
    $("plan-meta").textContent = "";
    return;
  }
  $("plan-meta").textContent = `v${plan.version} · ${plan.policy} · solver ${plan.solver.status} in ${plan.solver.time_ms.toFixed(0)} ms` +
    (plan.created_at ? ` · ${plan.created_at.replace("T", " ").replace("+00:00", " UTC")}` : "");
  const used = new Set();
  for (const [name, fam] of Object.entries(plan.families)) {
    const bar = el("div", { class: "bar", "data-family": name });
    const share = fam.demand_rps > 0 ? fam.served_rps / fam.demand_rps : 1;
    const standby = [];  // spill routes (weight 0): loaded, take only what the others cannot answer in time
    for (const r of fam.routes) {
      if (r.weight <= 0) { standby.push(`${r.variant}@${r.device_id}`); continue; }
      used.add(r.variant);
      const pct = 100 * r.weight * share;
      bar.append(el("div", { style: `width:${pct}%;background:${colorOf(r.variant)}`, title: `${r.variant} on ${r.device_id}: ${(100 * r.weight).toFixed(0)} % of served`,
        "data-variant": r.variant }, `${r.variant}@${r.device_id} ${(100 * r.weight * share).toFixed(0)}%`));
    }
    if (fam.unserved_rps > 0) {
      bar.append(el("div", { class: "unserved", style: `width:${100 * fam.unserved_rps / fam.demand_rps}%`, title: fam.reason }, "unserved"));
    }
    box.append(el("div", { class: "family" },
      el("div", { class: "title" }, el("strong", {}, name),
        el("span", { class: "muted" }, `${fam.demand_rps.toFixed(1)} rps planned · SLO ${fam.slo_ms} ms · eff. accuracy ${fam.effective_accuracy.toFixed(1)} %` +
          (fam.unserved_rps > 0 ? ` · ${fam.unserved_rps.toFixed(1)} rps unserved` : "") +
          (standby.length ? ` · standing by for spill: ${standby.join(", ")}` : ""))),
      bar));
  }
  const capacity = plan.placements.map(p => `${p.variant}@${p.device_id}: batch ≤ ${p.batch_cap}, ${p.served_rps.toFixed(1)}/${p.capacity_rps.toFixed(1)} rps`);
  box.append(el("div", { class: "muted", style: "font-size:12px" }, capacity.join(" · ")));
  $("legend").replaceChildren(...Object.keys(d.accuracy).sort((a, b) => d.accuracy[a] - d.accuracy[b]).map(v =>
    el("span", {}, el("i", { style: `background:${colorOf(v)}` }), `${v} (${d.accuracy[v].toFixed(1)} %)`)));
}

function drawCharts(d) {
  const fams = Object.keys(d.families);
  fillSelect($("family-select"), fams);
  const fam = $("family-select").value || fams[0];
  const t1 = Math.floor(d.now), t0 = t1 - 300;
  const rows = d.history.filter(r => r.family === fam).sort((a, b) => a.second - b.second);
  const switches = d.switches.map(s => ({ ts: s.ts, label: `${s.kind}: ${s.reason}` }));
  const pts = f => rows.map(r => [r.second, f(r)]);
  // per-second ratios are noisy at a few requests per second: draw them as 5-second rolling means
  const rolling = (num, den) => rows.map((r, i) => {
    const win = rows.slice(Math.max(0, i - 4), i + 1);
    const d = win.reduce((a, x) => a + den(x), 0);
    return [r.second, d ? win.reduce((a, x) => a + num(x), 0) / d : 0];
  });
  Charts.lineChart($("chart-demand"), t0, t1, [
    { name: "arrivals", color: "#2f6fde", points: pts(r => r.arrivals) },
    { name: "estimate", color: "#8e44ad", points: pts(r => r.estimate), dashed: true },
    { name: "planned capacity", color: "#1a9b52", points: pts(r => r.capacity) },
  ], { switches });
  Charts.lineChart($("chart-accuracy"), t0, t1, [
    { name: "effective accuracy (5 s mean)", color: "#1a9b52", points: rolling(r => r.effective_accuracy * r.arrivals, r => r.arrivals) },
  ], { yMax: 100, unit: "", switches });
  Charts.lineChart($("chart-misses"), t0, t1, [
    { name: "deadline misses (5 s mean)", color: "#d23c3c", points: rolling(r => 100 * r.misses, r => r.arrivals) },
  ], { yMax: 100, unit: "", switches });
  const names = Object.keys(d.accuracy).sort((a, b) => d.accuracy[a] - d.accuracy[b]);
  const colors = Object.fromEntries(names.map(n => [n, colorOf(n)]));
  Charts.stackedChart($("chart-mix"), t0, t1, rows.filter(r => r.completions > 0).map(r => ({ t: r.second, parts: r.mix })), names, colors, { switches });
}

function drawSettings(d) {
  if (state.settingsDrawn) return;
  state.settingsDrawn = true;
  const body = $("family-settings");
  body.replaceChildren();
  for (const [fam, s] of Object.entries(d.families)) {
    const slo = el("input", { type: "number", min: "1", step: "any", value: s.slo_ms, "aria-label": `SLO of ${fam}` });
    const floor = el("input", { type: "number", min: "0", max: "100", step: "any", placeholder: "none",
      value: s.accuracy_floor ? s.accuracy_floor.value : "", "aria-label": `accuracy floor of ${fam}` });
    const demand = el("input", { type: "number", min: "0", step: "any", placeholder: "auto",
      value: s.demand_override === null || s.demand_override === undefined ? "" : s.demand_override, "aria-label": `demand of ${fam}` });
    const peak = el("input", { type: "number", min: "0", step: "any", placeholder: "none",
      value: s.demand_floor === null || s.demand_floor === undefined ? "" : s.demand_floor, "aria-label": `peak of ${fam}` });
    const save = el("button", { type: "button", class: "secondary", onclick: () => act(`save ${fam} settings`, async () => {
      await api("PUT", `/api/v1/settings/families/${fam}`, {
        slo_ms: Number(slo.value),
        accuracy_floor: floor.value === "" ? null : { value: Number(floor.value), kind: "variant" },
        demand_override: demand.value === "" ? null : Number(demand.value),
        demand_floor: peak.value === "" ? null : Number(peak.value),
      });
      return `${fam}: settings saved` + (d.controller.auto ? " (the controller re-plans now)" : "");
    }) }, "Save");
    body.append(el("tr", { "data-family": fam }, el("td", {}, fam), el("td", {}, slo), el("td", {}, floor), el("td", {}, demand), el("td", {}, peak), el("td", {}, save)));
  }
  fillSelect($("policy"), d.policies);
  $("auto").checked = d.controller.auto;
}

function drawDecisions(d) {
  $("decisions").replaceChildren(...d.decisions.map(x => el("tr", {},
    el("td", {}, new Date(x.ts * 1000).toLocaleTimeString()),
    el("td", { class: `kind kind-${x.kind}` }, x.kind),
    el("td", {}, x.reason))));
}

function describePreview(res) {
  const lines = [`What would change: ${res.summary}`];
  for (const [name, f] of Object.entries(res.plan.families)) {
    lines.push(`${name}: plan for ${f.demand_rps.toFixed(1)} rps, serves ${f.served_rps.toFixed(1)} rps, effective accuracy ${f.effective_accuracy.toFixed(1)} %` +
      (f.reason ? `\n  unserved: ${f.reason}` : ""));
    for (const r of f.routes) {
      lines.push(r.weight > 0 ? `  ${(100 * r.weight).toFixed(0).padStart(3)} %  ${r.variant} on ${r.device_id}`
                              : `  spill  ${r.variant} on ${r.device_id} (standby)`);
    }
  }
  return lines.join("\n");
}

// -- loop and controls ---------------------------------------------------------------------
async function refresh() {
  try {
    const resp = await fetch("/api/v1/state");
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const d = await resp.json();
    state.data = d;
    drawHeader(d); drawDevices(d); drawPlan(d); drawCharts(d); drawSettings(d); drawDecisions(d);
    document.body.dataset.ready = "1";
  } catch (e) {
    say("cannot reach the control plane: " + e.message, true);
  }
}

function setup() {
  $("token").value = sessionStorage.getItem("orchestrator-token") || "";
  $("token-state").textContent = token() ? "" : "(read-only)";
  $("token").addEventListener("input", () => {
    sessionStorage.setItem("orchestrator-token", token());
    $("token-state").textContent = token() ? "" : "(read-only)";
  });
  $("token-form").addEventListener("submit", e => e.preventDefault());
  $("load-form").addEventListener("submit", e => {
    e.preventDefault();
    const dev = $("load-device").value, v = $("load-variant").value;
    act(`load ${v} on ${dev}`, () => api("POST", `/api/v1/devices/${dev}/models/${v}/load`, {}).then(() => `${v} loaded on ${dev}`));
  });
  $("family-select").addEventListener("change", () => state.data && drawCharts(state.data));
  $("auto").addEventListener("change", () => act("controller mode", () =>
    api("PUT", "/api/v1/settings/controller", { auto: $("auto").checked }).then(r => `controller: ${r.controller.auto ? "auto" : "manual"}`)));
  $("solve-button").addEventListener("click", () => act("solve", async () => {
    const res = await api("POST", "/api/v1/solve", { policy: $("policy").value, dry_run: true }).catch(e => { throw e; });
    state.preview = res.plan;
    $("preview").textContent = describePreview(res);
    $("apply-button").disabled = false;
    return "solved: review the preview, then apply";
  }));
  $("apply-button").addEventListener("click", () => act("apply", async () => {
    const res = await api("POST", "/api/v1/apply", { plan: state.preview });
    $("apply-button").disabled = true;
    $("preview").textContent = `Applied: plan v${res.result.version} (${res.result.summary}).`;
    return `plan v${res.result.version} applied: ${res.result.summary}`;
  }));
  refresh();
  setInterval(() => { if (!state.busy) refresh(); }, 1000);
}

document.addEventListener("DOMContentLoaded", setup);

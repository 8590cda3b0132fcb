// changeover dashboard: follows /events (server-sent events) and draws the page; no libraries.
// Every value from the journal is put into the page as text (textContent), never as HTML.
"use strict";

(() => {
  const TAIL = 200;
  const SAMPLES = 1440;
  const STALE_HEARTBEAT_S = 10; // the controller writes one every second while it watches
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);

  let state = empty();
  let skew = 0; // server clock minus ours, in ms
  let token = ""; // the operator token, kept in memory once it worked, for this page only
  let dialogAction = null;

  function empty() {
    return { sections: {}, tail: [], samples: [], marks: [], seq: 0 };
  }

  // --- DOM helpers --------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      // Through the CSSOM: the page's CSP forbids style attributes, not style properties.
      else if (key === "style") node.style.cssText = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function badge(text, cls) {
    return el("span", { class: `badge ${cls || text || ""}`, text: text || "–" });
  }

  function replace(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  }

  function num(value, digits = 3) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    if (typeof value !== "number") return String(value);
    if (value !== 0 && Math.abs(value) < 0.001) return value.toExponential(1);
    return Number(value.toPrecision(digits)).toLocaleString("en", { maximumFractionDigits: 4 });
  }

  function shown(value, unit, percent) {
    if (value === null || value === undefined) return "–";
    if (percent) return `${num(value * 100)} %`;
    if (!unit) return num(value);
    const glued = unit[0] === "%" || unit[0] === "/" || ["ms", "s", "MB", "B", "×"].includes(unit);
    return glued ? `${num(value)}${unit}` : `${num(value)} ${unit}`;
  }

  function time(ts) {
    if (!ts) return "–";
    const d = new Date(ts);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function dateTime(ts) {
    if (!ts) return "–";
    return new Date(ts).toLocaleString([], {
      month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    });
  }

  function serverNow() {
    return Date.now() + skew;
  }

  function safeHref(value) {
    return /^(https?:|mailto:|tel:)/i.test(value) ? value : null;
  }

  // --- the stream ---------------------------------------------------------------------------

  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("snapshot", (e) => apply(JSON.parse(e.data)));
    source.addEventListener("update", (e) => apply(JSON.parse(e.data)));
    source.addEventListener("open", () => setConnected(true));
    source.addEventListener("error", () => setConnected(false)); // it reconnects by itself
  }

  function setConnected(on) {
    const conn = $("conn");
    conn.className = `conn ${on ? "on" : "off"}`;
    conn.textContent = on ? "live" : "reconnecting…";
  }

  function apply(message) {
    if (message.full) state = empty();
    Object.assign(state.sections, message.sections);
    state.tail = state.tail.concat(message.tail).slice(-TAIL);
    state.samples = state.samples.concat(message.samples).slice(-SAMPLES);
    state.marks = state.marks.concat(message.marks);
    state.seq = message.seq;
    skew = new Date(message.now).getTime() - Date.now();
    setConnected(true);
    const changed = new Set(Object.keys(message.sections));
    const s = state.sections;
    if (changed.has("rollout")) { renderHeadline(s.rollout); renderPhases(s.rollout); }
    if (changed.has("gates")) renderGates(s.gates);
    if (message.full || message.samples.length || message.marks.length) renderCharts();
    if (changed.has("sync")) renderSync(s.sync);
    if (changed.has("decisions")) renderDecisions(s.decisions);
    if (changed.has("timeline")) renderTimeline(s.timeline);
    if (changed.has("checklist") || changed.has("timeline")) renderChecklist(s.checklist, s.timeline);
    if (changed.has("contacts") || changed.has("war_room")) renderContacts(s.contacts, s.war_room);
    if (message.full || message.tail.length) renderTail();
    renderAlerts();
  }

  // --- sections -----------------------------------------------------------------------------

  const STATUS_TEXT = {
    "not-started": "not started",
    "watching": "watching",
    "awaiting-approval": "awaiting approval",
    "between-phases": "between phases",
    "rollback-requested": "rollback requested",
    "rolling-back": "rolling back",
    "rolled-back": "rolled back",
    "complete": "complete",
  };

  function renderHeadline(rollout) {
    const status = $("status");
    status.className = `badge ${rollout.status}`;
    status.textContent = STATUS_TEXT[rollout.status] || rollout.status;
    $("phase").textContent = rollout.phase
      ? `phase ${rollout.phase}${rollout.phase_title ? ` — ${rollout.phase_title}` : ""}`
      : "";
    const weights = rollout.weights && rollout.weights.percent;
    const box = $("weights");
    if (weights) {
      const legacy = Number(weights.legacy ?? 0);
      const newer = Number(weights.new ?? 0);
      replace(
        box,
        `legacy ${num(legacy)}% · new ${num(newer)}%`,
        el("span", { class: "bar", title: `as of ${time(rollout.weights.at)}` },
          el("span", { style: `width:${legacy}%` }), el("span", { style: `width:${newer}%` })),
      );
    } else {
      replace(box, el("span", { class: "muted", text: "weights: not set by changeover yet" }));
    }
    // A finished run has no controller left to act on a rollback request: no button for it.
    $("rollback-btn").hidden = isFinished(rollout);
    const waiting = rollout.awaiting_approval || [];
    const approve = $("approve-btn");
    approve.hidden = waiting.length === 0 || isFinished(rollout);
    if (waiting.length) {
      approve.textContent = `Approve ${waiting[0]}…`;
      approve.dataset.phase = waiting[0];
    }
  }

  function isFinished(rollout) {
    return rollout.status === "complete" || rollout.status === "rolled-back";
  }

  function renderPhases(rollout) {
    const list = $("phases");
    replace(list, (rollout.phases || []).map((phase) => {
      const approvedBy = rollout.approved && rollout.approved[phase.id];
      const canApprove = !isFinished(rollout) && phase.state !== "passed" && !approvedBy;
      return el("li", { id: `phase-${phase.id}` },
        el("span", { class: "name" }, el("strong", { text: phase.title }), ` (${num(phase.weight)}% to new)`),
        badge(phase.state.replace("-", " "), phase.state),
        approvedBy ? el("span", { class: "muted small", text: `approved by ${approvedBy}` }) : null,
        canApprove
          ? el("button", {
            type: "button", class: `small ${phase.state === "awaiting-approval" ? "primary" : ""}`,
            "data-approve": phase.id, text: "Approve…", onclick: () => openApprove(phase.id),
          })
          : null);
    }));
    const bake = $("bake");
    if (rollout.phase && rollout.bake && rollout.status !== "rolled-back") {
      const observed = rollout.observed_s || 0;
      replace(bake,
        el("div", {
          text: `observed ${num(observed, 4)} s of bake (min ${num(rollout.bake.min_s)} s, max ${num(rollout.bake.max_s)} s)` +
            (rollout.decision ? ` · decision: ${rollout.decision.mode}` : ""),
        }),
        el("progress", { max: rollout.bake.max_s || 1, value: Math.min(observed, rollout.bake.max_s || observed) }));
    } else if (rollout.rolled_back) {
      replace(bake, el("div", {
        text: `rolled back (${rollout.rolled_back.mode}): ${rollout.rolled_back.reason || ""}`,
      }));
    } else {
      replace(bake);
    }
  }

  function renderGates(gates) {
    const body = $("gates").tBodies[0];
    const rows = [];
    let group = null;
    for (const gate of gates || []) {
      if (gate.role !== group) {
        group = gate.role;
        rows.push(el("tr", { class: "group" }, el("td", { colspan: 6, text: group })));
      }
      const band = gate.bound
        ? `${shown(gate.bound[0], gate.unit, gate.percent)} – ${shown(gate.bound[1], gate.unit, gate.percent)}`
        : "–";
      rows.push(el("tr", { id: `gate-${gate.gate}`, "data-gate": gate.gate },
        el("td", { "data-label": "Gate" }, el("strong", { text: gate.title }), el("br"),
          el("span", { class: "muted small", text: gate.condition })),
        el("td", { "data-label": "Verdict" }, badge(gate.outcome || "no data", gate.outcome || "")),
        el("td", { class: "num observed", "data-label": "Value", text: shown(gate.observed, gate.unit, gate.percent) }),
        el("td", { class: "num", "data-label": "Band", text: band }),
        el("td", { class: "num", "data-label": "Threshold", text: shown(gate.threshold, gate.unit, gate.percent) }),
        el("td", { class: "why", "data-label": "Why", text: gate.reason || (gate.samples ? `${gate.samples} samples` : "") })));
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No phase is being watched." })));
    replace(body, rows);
  }

  const SERIES = {
    // floor: the smallest top of the y axis, so a flat zero line is drawn as zero, not as noise
    rps: { label: "requests/s", keys: [["rps", "req/s"]], scale: 1, floor: 1 },
    errors: { label: "error rate", keys: [["error_rate", "errors"]], scale: 100, unit: "%", floor: 1 },
    latency: { label: "latency", keys: [["p50_ms", "p50"], ["p95_ms", "p95"], ["p99_ms", "p99"]], scale: 1, unit: "ms", floor: 1 },
  };
  const LINE_COLOURS = ["var(--new)", "var(--continue)", "var(--fail)"];

  function renderCharts() {
    const box = $("charts");
    if (!state.samples.length) return;
    const names = [];
    for (const sample of state.samples) {
      for (const name of Object.keys(sample.backends || {})) if (!names.includes(name)) names.push(name);
    }
    names.sort((a, b) => (a === "legacy" ? -1 : b === "legacy" ? 1 : a.localeCompare(b)));
    const times = state.samples.map((s) => new Date(s.ts).getTime());
    const t0 = Math.min(...times, ...state.marks.map((m) => new Date(m.ts).getTime()));
    const t1 = Math.max(...times);
    replace(box, names.map((name) => {
      const points = state.samples.map((s, i) => ({ t: times[i], b: (s.backends || {})[name] || {} }));
      const last = points[points.length - 1].b;
      return el("div", { class: "backend", id: `backend-${name}` },
        el("h3", {}, name, " ",
          el("span", { class: "now muted" },
            el("span", { id: `rps-${name}`, class: "rps", text: last.rps == null ? "–" : Number(last.rps).toFixed(1) }),
            " req/s · ", `${last.error_rate == null ? "–" : num(last.error_rate * 100)} % errors · p95 `,
            `${last.p95_ms == null ? "–" : num(last.p95_ms)} ms`)),
        Object.entries(SERIES).map(([key, spec]) => chart(key, spec, points, t0, t1)));
    }));
  }

  function chart(key, spec, points, t0, t1) {
    const width = Math.max(260, $("charts").clientWidth / (window.innerWidth > 1000 ? 2 : 1) - 24);
    const height = 110;
    const pad = { l: 34, r: 6, t: 6, b: 14 };
    const values = spec.keys.map(([field]) => points.map((p) => {
      const v = p.b[field];
      return v === null || v === undefined ? null : v * spec.scale;
    }));
    const max = Math.max(spec.floor, ...values.flat().filter((v) => v !== null)) * 1.1;
    const x = (t) => pad.l + (t1 > t0 ? ((t - t0) / (t1 - t0)) : 1) * (width - pad.l - pad.r);
    const y = (v) => height - pad.b - (v / max) * (height - pad.t - pad.b);
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `${spec.label} over time`);
    const add = (tag, attrs, text) => {
      const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) {
        if (k === "style") node.style.cssText = v;
        else node.setAttribute(k, String(v));
      }
      if (text !== undefined) node.textContent = text;
      svg.append(node);
      return node;
    };
    add("line", { class: "grid", x1: pad.l, x2: width - pad.r, y1: y(0), y2: y(0) });
    add("line", { class: "grid", x1: pad.l, x2: width - pad.r, y1: y(max / 1.1), y2: y(max / 1.1) });
    add("text", { x: 2, y: y(max / 1.1) + 4 }, num(max / 1.1, 2));
    add("text", { x: 2, y: y(0) + 3 }, "0");
    add("text", { x: pad.l, y: height - 2 }, time(new Date(t0).toISOString()));
    add("text", { x: width - pad.r, y: height - 2, "text-anchor": "end" }, time(new Date(t1).toISOString()));
    for (const mark of state.marks) {
      const at = x(new Date(mark.ts).getTime());
      const line = add("line", { class: `mark ${mark.kind}`, x1: at, x2: at, y1: pad.t, y2: height - pad.b });
      const title = document.createElementNS(ns, "title");
      title.textContent = `${mark.label} at ${time(mark.ts)}`;
      line.append(title);
    }
    values.forEach((series, i) => {
      let d = "";
      let pen = false;
      series.forEach((v, j) => {
        if (v === null) { pen = false; return; }
        d += `${pen ? "L" : "M"}${x(points[j].t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      });
      if (d) add("path", { class: "line", d, style: `stroke:${LINE_COLOURS[i % LINE_COLOURS.length]}` });
    });
    const legend = spec.keys.length > 1
      ? el("span", { class: "legend" }, spec.keys.map(([, name], i) =>
        el("span", { style: `color:${LINE_COLOURS[i]}`, text: `— ${name}` })))
      : null;
    return el("div", { class: "chart", "data-chart": key },
      el("div", { class: "label" }, el("span", { text: `${spec.label}${spec.unit ? ` (${spec.unit})` : ""}` }), legend),
      svg);
  }

  function renderSync(sync) {
    const box = $("sync");
    const rows = [];
    if (sync.live) {
      rows.push(sync.live.error
        ? el("p", { class: "error", text: `live: ${sync.live.error}` })
        : el("p", {}, el("strong", { id: "sync-live", text: `${num(sync.live.rows)} rows / ${num(sync.live.seconds * 1000)} ms behind` }),
          el("span", { class: "muted small", text: ` (live, ${time(sync.live.at)})` })));
    }
    if (sync.journal) {
      rows.push(el("p", {}, `${num(sync.journal.rows)} rows / ${num(sync.journal.seconds * 1000)} ms behind `,
        el("span", { class: "muted small", text: `(when the sync step ran, ${time(sync.journal.at)})` })));
    }
    if (!rows.length) rows.push(el("p", { class: "muted", text: "No sync running (the plan has no migrate: section, or the sync step has not run)." }));
    replace(box, rows);
  }

  function renderDecisions(decisions) {
    replace($("decisions"), (decisions || []).slice().reverse().map((d) => el("li", {},
      el("span", { class: "when", text: time(d.ts) }),
      d.text, " ", el("span", { class: "who", text: `— ${d.actor}` }),
      d.evidence && d.evidence.length
        ? el("details", {}, el("summary", { text: `evidence (${d.evidence.length} verdicts)` }),
          el("ul", {}, d.evidence.map((v) => el("li", {},
            badge(v.outcome, v.outcome), ` ${v.gate}: ${v.reason || num(v.observed)}`))))
        : null)));
    if (!(decisions || []).length) replace($("decisions"), el("li", { class: "muted", text: "No decisions yet." }));
  }

  function renderTimeline(timeline) {
    replace($("timeline"), (timeline.stages || []).map((stage) => {
      const shownState = stage.overdue ? "overdue" : stage.done === stage.total ? "done" : stage.window;
      const when = stage.opens_at
        ? `${dateTime(stage.opens_at)}${stage.due_at ? ` → ${dateTime(stage.due_at)}` : ""}`
        : stage.phase ? "traffic phase" : "unscheduled";
      return el("li", { id: `stage-${stage.stage}` },
        el("span", { class: "name", text: stage.title }),
        el("span", { class: "muted small", text: when }),
        el("span", { text: `${stage.done}/${stage.total}` }),
        stage.phase ? badge(stage.phase.replace("-", " "), stage.phase) : badge(shownState, shownState),
        stage.overdue ? el("span", { class: "small", text: `${stage.overdue} overdue` }) : null);
    }));
  }

  function renderChecklist(steps, timeline) {
    const box = $("checklist");
    const open = new Set([...box.querySelectorAll("details[open]")].map((d) => d.dataset.stage));
    const summary = (timeline && timeline.summary) || {};
    replace($("progress"),
      `${summary.done || 0} of ${summary.total || 0} done · ${summary.due || 0} due · ${summary.overdue || 0} overdue`);
    const stages = new Map();
    for (const step of steps || []) {
      const key = step.stage || "after";
      if (!stages.has(key)) stages.set(key, []);
      stages.get(key).push(step);
    }
    const titles = new Map(((timeline && timeline.stages) || []).map((s) => [s.stage, s.title]));
    replace(box, [...stages.entries()].map(([stage, items]) => {
      const done = items.filter((s) => s.state === "done").length;
      const late = items.filter((s) => s.timing === "overdue").length;
      const due = items.filter((s) => s.timing === "due").length;
      const details = el("details", { "data-stage": stage, open: open.has(stage) || late > 0 || due > 0 },
        el("summary", {},
          el("span", { class: "name", text: titles.get(stage) || "Rollback triggers and success criteria" }),
          el("progress", { max: items.length, value: done }),
          el("span", { class: "small", text: `${done}/${items.length}` }),
          late ? badge(`${late} overdue`, "overdue") : null),
        el("ul", { class: "steps" }, items.map((step) => el("li", { id: `step-${step.id}`, "data-step": step.id },
          badge(step.state, step.state),
          el("span", { class: "name" }, step.title, " ", el("span", { class: "muted small", text: step.id })),
          step.timing === "due" || step.timing === "overdue" ? badge(step.timing, step.timing) : null,
          step.state !== "done"
            ? el("button", { type: "button", class: "small", text: "Sign off…", onclick: () => openSignoff(step) })
            : null,
          step.result && step.state === "failed"
            ? el("span", { class: "signed", text: `last check: ${step.result.reason || step.result.status}` })
            : null,
          (step.signoffs || []).length
            ? el("span", {
              class: "signed",
              text: step.signoffs.map((s) => `signed off by ${s.by} at ${time(s.at)}${s.note ? ` — ${s.note}` : ""}`).join("; "),
            })
            : null))));
      return details;
    }));
  }

  function renderContacts(contacts, warRoom) {
    const labels = {
      conference_bridge: "Bridge", zoom: "Zoom", slack_channel: "Slack", log_aggregation: "Logs",
      metrics_dashboard: "Metrics", runbook: "Runbook",
    };
    replace($("war-room"), Object.entries(warRoom || {}).filter(([, v]) => v).flatMap(([key, value]) => {
      const href = safeHref(value);
      return [el("dt", { text: labels[key] || key }),
        el("dd", {}, href ? el("a", { href, rel: "noopener noreferrer", target: "_blank", text: value }) : value)];
    }));
    replace($("contacts"), (contacts || []).map((c) => el("li", {},
      el("strong", { text: c.title }), ` ${c.name}`,
      c.phone ? [" · ", el("a", { href: `tel:${c.phone.replace(/[^+0-9]/g, "")}`, text: c.phone })] : null,
      c.slack ? ` · ${c.slack}` : null,
      c.email ? [" · ", el("a", { href: `mailto:${c.email}`, text: c.email })] : null)));
  }

  function renderTail() {
    replace($("tail"), state.tail.slice().reverse().map((line) => el("li", { "data-seq": line.seq },
      el("span", { class: "when", text: time(line.ts) }),
      el("span", { class: "kind", text: line.kind }),
      line.text, " ", el("span", { class: "who", text: `— ${line.actor}` }))));
  }

  function renderAlerts() {
    const s = state.sections;
    const alerts = [];
    if (s.health && s.health.journal_error) alerts.push(["", s.health.journal_error]);
    const unreadable = (s.health && s.health.unreadable) || [];
    if (unreadable.length) {
      alerts.push(["warn", `${unreadable.length} journal event(s) cannot be shown here; the latest: ${unreadable[unreadable.length - 1]}`]);
    }
    const rollout = s.rollout;
    if (rollout && ["watching", "awaiting-approval"].includes(rollout.status) && rollout.last_heartbeat) {
      const age = (serverNow() - new Date(rollout.last_heartbeat).getTime()) / 1000;
      if (age > STALE_HEARTBEAT_S) {
        alerts.push(["warn", `No heartbeat from the controller for ${Math.round(age)} s: is 'changeover run' running?`]);
      }
    }
    if (rollout && rollout.rollback_request) {
      alerts.push(["", `Rollback requested by ${rollout.rollback_request.by}: ${rollout.rollback_request.reason}`]);
    }
    replace($("alerts"), alerts.map(([cls, text]) => el("div", { class: `alert ${cls}`, role: "alert", text })));
  }

  function tick() {
    const plan = state.sections.plan;
    if (plan) {
      const delta = Math.round((serverNow() - new Date(plan.cutover_at).getTime()) / 1000);
      const abs = Math.abs(delta);
      const hms = [Math.floor(abs / 3600), Math.floor(abs / 60) % 60, abs % 60]
        .map((n) => String(n).padStart(2, "0")).join(":");
      $("clock").textContent = `cutover ${dateTime(plan.cutover_at)} · T${delta < 0 ? "−" : "+"}${hms}`;
    }
    renderAlerts();
  }

  // --- actions ------------------------------------------------------------------------------

  function openApprove(phase) {
    const rollout = state.sections.rollout || {};
    const waiting = (rollout.awaiting_approval || []).includes(phase);
    openDialog({
      path: "/api/approve",
      title: `Approve phase ${phase}`,
      text: waiting
        ? `The controller is waiting for this decision. Approving lets it move past ${phase}.`
        : `${phase} is not waiting for a decision yet: approving now lets it proceed as soon as its gates allow.`,
      body: () => ({ phase }),
    });
  }

  function openSignoff(step) {
    openDialog({
      path: "/api/signoff",
      title: `Sign off: ${step.title}`,
      text: `Step ${step.id}${step.role ? ` (role: ${step.role})` : ""}. ` +
        (step.state === "failed" ? "Its check failed: signing off accepts it as done." : "Journaled with your name."),
      note: true,
      body: () => ({ step: step.id, note: $("f-note").value }),
    });
  }

  function openRollback() {
    openDialog({
      path: "/api/rollback",
      title: "Roll back to legacy",
      text: "The running controller moves traffic back to the legacy app.",
      rollback: true,
      body: () => ({
        mode: document.querySelector('input[name="mode"]:checked').value,
        reason: $("f-reason").value,
      }),
    });
  }

  function openDialog(action) {
    dialogAction = action;
    $("confirm-title").textContent = action.title;
    $("confirm-text").textContent = action.text;
    $("rollback-fields").hidden = !action.rollback;
    $("note-field").hidden = !action.note;
    $("f-note").value = "";
    $("f-reason").value = "";
    $("f-by").value = localStorage.getItem("changeover.by") || "";
    $("f-token").value = token;
    $("confirm-error").textContent = "";
    $("confirm-ok").disabled = false;
    $("confirm").showModal();
  }

  async function confirmAction(event) {
    event.preventDefault();
    const action = dialogAction;
    if (!action) return;
    const by = $("f-by").value.trim();
    const given = $("f-token").value.trim();
    if (!by) { $("confirm-error").textContent = "Your name is needed: it goes into the journal."; return; }
    if (action.rollback && !$("f-reason").value.trim()) {
      $("confirm-error").textContent = "A reason is needed: it is journaled and sent with the notification.";
      return;
    }
    $("confirm-ok").disabled = true;
    const headers = { "Content-Type": "application/json", "X-CSRF-Token": csrf };
    if (given) headers.Authorization = `Bearer ${given}`;
    let answer;
    try {
      const response = await fetch(action.path, {
        method: "POST", headers, credentials: "same-origin",
        body: JSON.stringify({ ...action.body(), by }),
      });
      answer = await response.json().catch(() => ({ ok: false, error: `HTTP ${response.status}` }));
      answer.status = response.status;
    } catch (err) {
      answer = { ok: false, error: `the dashboard did not answer (${err.message})` };
    }
    $("confirm-ok").disabled = false;
    if (!answer.ok) {
      $("confirm-error").textContent = answer.error || "refused";
      if (answer.status === 401 || answer.status === 403) token = "";
      return;
    }
    token = given;
    localStorage.setItem("changeover.by", by);
    $("confirm").close();
    toast(answer.message);
  }

  function toast(text) {
    const box = $("toast");
    box.textContent = text;
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("rollback-btn").addEventListener("click", openRollback);
    $("approve-btn").addEventListener("click", (e) => openApprove(e.currentTarget.dataset.phase));
    $("confirm-form").addEventListener("submit", confirmAction);
    $("confirm-cancel").addEventListener("click", () => $("confirm").close());
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(renderCharts, 150);
    });
    setInterval(tick, 1000);
    connect();
  });
})();

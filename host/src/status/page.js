// The tailgate status page: polls /api/status and draws it with plain SVG (no external assets).
"use strict";
const COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777"];
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n * 10) / 10);
}

// Draws series ({name, color, dash, points: [[t, y]]}) into an <svg> with a time axis.
function lineChart(svg, series, opts) {
  const w = +svg.getAttribute("width"), h = +svg.getAttribute("height");
  const left = 44, right = 8, top = 8, bottom = 18;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  let tmin = Infinity, tmax = -Infinity, ymax = opts.ymax || 0;
  for (const s of series) for (const [t, y] of s.points) {
    tmin = Math.min(tmin, t); tmax = Math.max(tmax, t);
    if (!opts.ymax) ymax = Math.max(ymax, y);
  }
  if (!isFinite(tmin)) { tmin = Date.now() - 60000; tmax = Date.now(); }
  if (tmax - tmin < 60000) tmin = tmax - 60000;
  if (ymax <= 0) ymax = 1;
  const x = t => left + (t - tmin) / (tmax - tmin) * (w - left - right);
  const y = v => top + (1 - v / ymax) * (h - top - bottom);
  for (let i = 0; i <= 4; i++) {
    const v = ymax * i / 4;
    svg.appendChild(el("svg:line", {class: "grid", x1: left, x2: w - right, y1: y(v), y2: y(v)}));
    svg.appendChild(el("svg:text", {class: "axis", x: left - 4, y: y(v) + 3, "text-anchor": "end"}, opts.percent ? Math.round(v) + "%" : fmt(v)));
  }
  const span = (tmax - tmin) / 1000;
  for (let i = 0; i <= 4; i++) {
    const t = tmin + (tmax - tmin) * i / 4;
    const ago = Math.round(span * (1 - i / 4));
    svg.appendChild(el("svg:text", {class: "axis", x: x(t), y: h - 4, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle"},
      ago === 0 ? "now" : ago >= 60 ? "-" + Math.round(ago / 6) / 10 + "m" : "-" + ago + "s"));
  }
  for (const s of series) {
    if (s.points.length === 0) continue;
    const pts = s.points.map(([t, v]) => x(t).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
    const attrs = {class: "series", points: pts, stroke: s.color, "data-series": s.name};
    if (s.dash) attrs["stroke-dasharray"] = "5 3";
    svg.appendChild(el("svg:polyline", attrs));
  }
}

function legend(div, series) {
  div.textContent = "";
  for (const s of series) div.appendChild(el("span", {style: "color:" + s.color}, (s.dash ? "- - " : "\u2014 ") + s.name));
}

function render(st) {
  const hist = st.history;
  const per = st.sample_interval_ms / 1000;
  const tput = [
    {name: "in", color: COLORS[0], points: hist.map(s => [s.t, s.spans_in / per])},
    {name: "out (exported)", color: COLORS[2], points: hist.map(s => [s.t, s.spans_out / per])},
    {name: "sampled out", color: "#9ca3af", dash: true, points: hist.map(s => [s.t, s.sampled_out / per])},
  ];
  lineChart(document.getElementById("chart-throughput"), tput, {});
  legend(document.getElementById("legend-throughput"), tput);

  const rules = [];
  for (const s of hist) for (const d of s.decisions) if (!rules.includes(d.rule)) rules.push(d.rule);
  const dec = [];
  rules.forEach((r, i) => {
    const color = COLORS[i % COLORS.length];
    const get = (s, k) => { const d = s.decisions.find(d => d.rule === r); return d ? d[k] / per : 0; };
    dec.push({name: r + " keep", color, points: hist.map(s => [s.t, get(s, "keep")])});
    dec.push({name: r + " drop", color, dash: true, points: hist.map(s => [s.t, get(s, "drop")])});
  });
  lineChart(document.getElementById("chart-decisions"), dec, {});
  legend(document.getElementById("legend-decisions"), dec);

  const b = st.buffer;
  const pct = b.limit > 0 ? 100 * b.bytes / b.limit : 0;
  document.getElementById("buffer-fill").style.width = Math.min(100, pct).toFixed(1) + "%";
  document.getElementById("buffer-text").textContent =
    `${fmt(b.bytes)}B of ${fmt(b.limit)}B (${pct.toFixed(1)} %), ${b.traces} traces, ${b.spans} spans`;
  const mem = st.memory;
  document.getElementById("memory-text").textContent =
    `Process: ${fmt(mem.resident)}B resident (peak ${fmt(mem.resident_peak)}B) of a ${fmt(mem.limit)}B limit; ` +
    `export queue ${fmt(mem.export_queue_bytes)}B of ${fmt(mem.export_queue_limit)}B`;
  const sc = st.second_chance;
  document.getElementById("second-chance-text").textContent =
    `Second chance: ${sc.ring_traces} dropped traces held (${fmt(sc.ring_bytes)}B); rescued ` +
    `${sc.rescued_late_span} by late spans, ${sc.rescued_request} on request; evicted ` +
    `${sc.evicted_bytes} when full, ${sc.evicted_expired} expired`;
  lineChart(document.getElementById("chart-buffer"),
    [{name: "fill", color: COLORS[3], points: hist.map(s => [s.t, s.buffer_limit > 0 ? 100 * s.buffer_bytes / s.buffer_limit : 0])}],
    {ymax: 100, percent: true});

  const pol = document.getElementById("policy");
  pol.textContent = "";
  pol.appendChild(el("p", {}, "rules: " + (st.policy.rules.map(r => r.name + (r.shadow ? " (shadow)" : "")).join(", ") || "none") +
    "; default: " + st.policy.default + "; redactors: " + (st.policy.redactors.join(", ") || "none")));
  const rl = document.getElementById("reload");
  rl.textContent = "";
  if (!st.reload) {
    rl.appendChild(el("p", {}, "started without a configuration file: nothing to reload"));
  } else if (!st.reload.last) {
    rl.appendChild(el("p", {}, `config ${st.reload.config}, loaded ${new Date(st.last_load_unix * 1000).toLocaleTimeString()}; no reload since start`));
  } else {
    const o = st.reload.last.outcome;
    rl.appendChild(el("p", {class: o.ok ? "keep" : "bad", id: "reload-outcome"},
      `${o.ok ? "reloaded" : "reload refused"} (${o.trigger}) at ${new Date(st.reload.last.at_unix * 1000).toLocaleTimeString()}, ${o.duration_ms.toFixed(1)} ms`));
    if (o.error) rl.appendChild(el("p", {class: "bad"}, o.error));
    if (o.ok) rl.appendChild(el("p", {}, `loaded: ${o.loaded.join(", ") || "-"}; kept: ${o.kept.join(", ") || "-"}; removed: ${o.removed.join(", ") || "-"}; changed: ${o.changed.join(", ") || "-"}`));
  }

  const pt = document.querySelector("#plugins tbody");
  pt.textContent = "";
  for (const p of st.plugins) {
    const tr = el("tr", {class: "plugin"});
    tr.appendChild(el("td", {}, p.rule));
    tr.appendChild(el("td", {}, p.role));
    tr.appendChild(el("td", {class: "path", title: p.path}, p.path.split("/").pop()));
    tr.appendChild(el("td", {title: p.sha256}, p.sha256.slice(0, 12)));
    tr.appendChild(el("td", {}, p.load_ms.toFixed(1) + " ms" + (p.from_cache ? " (cached)" : "")));
    tr.appendChild(el("td", {}, fmt(p.calls)));
    tr.appendChild(el("td", {}, p.mean_call_us.toFixed(1) + " \u00b5s"));
    tr.appendChild(el("td", {class: p.failures ? "bad" : "", title: `traps ${p.traps}, timeouts ${p.timeouts}, out of memory ${p.out_of_memory}, bad results ${p.bad_results}`}, String(p.failures)));
    pt.appendChild(tr);
  }
  if (st.plugins.length === 0) pt.appendChild(el("tr", {}, "no plugins loaded"));

  const rt = document.querySelector("#recent tbody");
  rt.textContent = "";
  for (const d of st.recent) {
    const tr = el("tr", {class: "decision"});
    tr.appendChild(el("td", {}, new Date(d.decided_at_unix_ms).toLocaleTimeString()));
    const id = el("td");
    const code = el("code", {}, d.trace_id.slice(0, 16) + "\u2026");
    if (d.jaeger_url) {
      const a = el("a", {href: d.jaeger_url, target: "_blank", rel: "noopener", class: "jaeger"});
      a.appendChild(code);
      id.appendChild(a);
    } else id.appendChild(code);
    id.appendChild(document.createTextNode(" "));
    id.appendChild(el("a", {href: "/debug/traces/" + d.trace_id, class: "explain"}, "why"));
    tr.appendChild(id);
    tr.appendChild(el("td", {class: d.decision}, d.decision));
    tr.appendChild(el("td", {}, d.rule));
    tr.appendChild(el("td", {}, d.probability == null ? "" : String(d.probability)));
    tr.appendChild(el("td", {}, d.trigger));
    tr.appendChild(el("td", {}, (d.root_service || "?") + ": " + (d.root_name || (d.decision === "keep" ? "(no root)" : "(dropped: not shown)"))));
    tr.appendChild(el("td", {}, String(d.spans + d.late_spans)));
    const red = d.redactions.applied.map(n => `${n.rule}: ${n.field}${n.key ? " " + n.key : ""} ${n.action} \u00d7${n.count}`).join("; ");
    tr.appendChild(el("td", {}, red + (d.redactions.fallback ? ` (${d.redactions.fallback.rule} failed: ${d.redactions.fallback.action})` : "")));
    rt.appendChild(tr);
  }

  const last = hist[hist.length - 1];
  document.getElementById("summary").textContent = last
    ? `${fmt(last.spans_in / per)} spans/s in, ${fmt(last.spans_out / per)} spans/s out, ${st.totals.spans_out} exported in total`
    : "no samples yet";
  document.getElementById("updated").textContent = "updated " + new Date(st.now_unix_ms).toLocaleTimeString();
  document.body.setAttribute("data-rendered", String(hist.length));
}

async function poll() {
  try {
    const r = await fetch("/api/status", {cache: "no-store"});
    if (r.ok) render(await r.json());
    else document.getElementById("summary").textContent = "status: HTTP " + r.status;
  } catch (e) {
    document.getElementById("summary").textContent = "tailgate is not answering: " + e;
  }
  setTimeout(poll, 1000);
}
poll();

// Small hand-written SVG charts for the dashboard (no library, nothing from the network).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const W = 600, H = 200, PAD = { left: 38, right: 8, top: 8, bottom: 18 };

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Axes, grid and the time scale shared by every chart; returns the x/y mapping functions.
function frame(svg, t0, t1, yMax, unit) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const x = t => PAD.left + (t - t0) / Math.max(1, t1 - t0) * (W - PAD.left - PAD.right);
  const y = v => H - PAD.bottom - v / yMax * (H - PAD.top - PAD.bottom);
  for (let i = 0; i <= 4; i++) {
    const v = yMax * i / 4;
    svg.appendChild(svgEl("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    svg.appendChild(svgEl("text", { x: PAD.left - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v) + (unit || "")));
  }
  for (let s = 0; s <= 300; s += 60) {
    const t = t1 - s;
    if (t < t0) break;
    svg.appendChild(svgEl("text", { x: x(t), y: H - 4, "text-anchor": "middle" }, s === 0 ? "now" : `-${s / 60}m`));
  }
  return { x, y };
}

function fmt(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, "");
}

function switchMarkers(svg, xy, t0, t1, switches) {
  for (const s of switches || []) {
    if (s.ts < t0 || s.ts > t1) continue;
    const line = svgEl("line", { class: "switch", x1: xy.x(s.ts), x2: xy.x(s.ts), y1: PAD.top, y2: H - PAD.bottom });
    line.appendChild(svgEl("title", {}, s.label));
    svg.appendChild(line);
  }
}

// series: [{name, color, points: [[t, v], ...], dashed}]
function lineChart(svg, t0, t1, series, opts) {
  opts = opts || {};
  let max = opts.yMax || 0;
  if (!opts.yMax) for (const s of series) for (const p of s.points) max = Math.max(max, p[1]);
  const yMax = opts.yMax || niceMax(max * 1.1);
  const xy = frame(svg, t0, t1, yMax, opts.unit);
  switchMarkers(svg, xy, t0, t1, opts.switches);
  let legendX = PAD.left + 6;
  for (const s of series) {
    if (s.points.length) {
      const d = s.points.map((p, i) => `${i ? "L" : "M"}${xy.x(p[0]).toFixed(1)},${xy.y(Math.min(p[1], yMax)).toFixed(1)}`).join("");
      svg.appendChild(svgEl("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, class: "series",
        "data-series": s.name, "data-points": s.points.length, "stroke-dasharray": s.dashed ? "5 3" : "none",
        "vector-effect": "non-scaling-stroke" }));
    }
    svg.appendChild(svgEl("rect", { x: legendX, y: PAD.top + 2, width: 10, height: 3, fill: s.color }));
    svg.appendChild(svgEl("text", { x: legendX + 13, y: PAD.top + 7 }, s.name));
    legendX += 20 + 6 * s.name.length;
  }
  if (!series.some(s => s.points.length)) {
    svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no traffic yet"));
  }
}

// Stacked shares per second: rows [{t, parts: {name: value}}], names in stacking order.
function stackedChart(svg, t0, t1, rows, names, colors, opts) {
  const xy = frame(svg, t0, t1, 100, "%");
  switchMarkers(svg, xy, t0, t1, (opts || {}).switches);
  const totals = rows.map(r => names.reduce((a, n) => a + (r.parts[n] || 0), 0));
  let below = rows.map(() => 0);
  names.forEach((name) => {
    const tops = rows.map((r, i) => below[i] + (totals[i] ? 100 * (r.parts[name] || 0) / totals[i] : 0));
    if (rows.length && tops.some((v, i) => v > below[i])) {
      const upper = rows.map((r, i) => `${xy.x(r.t).toFixed(1)},${xy.y(tops[i]).toFixed(1)}`);
      const lower = rows.map((r, i) => `${xy.x(r.t).toFixed(1)},${xy.y(below[i]).toFixed(1)}`).reverse();
      const poly = svgEl("polygon", { points: upper.concat(lower).join(" "), fill: colors[name], opacity: 0.85,
        class: "series", "data-series": name, "data-points": rows.length });
      poly.appendChild(svgEl("title", {}, name));
      svg.appendChild(poly);
    }
    below = tops;
  });
  if (!rows.length) svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no traffic yet"));
}

window.Charts = { lineChart, stackedChart };

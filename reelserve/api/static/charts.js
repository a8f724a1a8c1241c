// Small SVG charts for the dashboard: a multi-series line chart over time and a bar chart.
// No libraries. Every element is built with createElementNS and every text with textContent, so
// nothing from the API is ever parsed as markup.
//
// Each chart draws into an existing <svg> (the page gives it data-chart="<name>"), replacing what
// was there. The viewBox is the width the caller passes (the container's CSS width), so text stays
// at its real size on a phone and on a desktop, and the SVG still scales if the box changes later.
// Every drawn point or bar carries data-value="<number>"; points also data-series="<name>" and
// data-t (the start of their interval, epoch s), bars data-label.

const SVG_NS = "http://www.w3.org/2000/svg";
const FONT_PX = 11;
const CHAR_PX = 6.6; // rough width of one character at FONT_PX, for margins

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(key, String(value));
  }
  if (text !== null) node.textContent = String(text);
  return node;
}

function round2(v) {
  return Math.round(v * 100) / 100;
}

/** A "nice" step (1, 2, 2.5 or 5 times a power of ten) at least `raw`. */
export function niceStep(raw) {
  if (!(raw > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * power >= raw - 1e-12) return m * power;
  }
  return 10 * power;
}

/** Ticks 0..top for a y axis holding values up to `max`, about `count` intervals. */
export function yTicks(max, count = 4) {
  const top = max > 0 ? max : 1;
  const step = niceStep(top / count);
  const ticks = [];
  for (let v = 0; v <= top + step * 0.999; v += step) ticks.push(round2(v / step) * step);
  return ticks;
}

const TIME_STEPS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600];

/** Times (epoch s) for x ticks between t0 and t1: whole minutes (labels are HH:MM), at most `maxTicks`. */
export function timeTicks(t0, t1, maxTicks) {
  const span = Math.max(1, t1 - t0);
  const step = TIME_STEPS.find((s) => span / s <= Math.max(1, maxTicks)) ?? TIME_STEPS[TIME_STEPS.length - 1];
  const ticks = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) ticks.push(t);
  return ticks;
}

export function clockLabel(epochS, seconds = false) {
  const d = new Date(epochS * 1000);
  const hh = String(d.getHours()).padStart(2, "0");
  const mm = String(d.getMinutes()).padStart(2, "0");
  if (!seconds) return `${hh}:${mm}`;
  return `${hh}:${mm}:${String(d.getSeconds()).padStart(2, "0")}`;
}

function begin(svg, { title, description, width, height }) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", description ? `${title}. ${description}` : title);
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  svg.append(el("title", {}, title));
  if (description) svg.append(el("desc", {}, description));
}

/**
 * A line chart over time.
 *   times:  interval starts (epoch s), oldest first; step: seconds per interval (points sit mid-interval)
 *   series: [{name, label, values: [number|null, ...]}] — a null is a gap in the line
 *   format: value -> axis/tooltip text
 */
export function lineChart(svg, { title, description = "", width = 400, height = 200, times, step, series, format = String }) {
  width = Math.max(240, Math.round(width));
  begin(svg, { title, description, width, height });

  const all = series.flatMap((s) => s.values).filter((v) => typeof v === "number" && Number.isFinite(v));
  const ticks = yTicks(all.length ? Math.max(...all) : 0);
  const top = ticks[ticks.length - 1];
  const labels = ticks.map((v) => format(v));

  const legendRow = series.length > 1 ? 18 : 0;
  const margin = {
    left: Math.ceil(Math.max(...labels.map((l) => l.length)) * CHAR_PX) + 10,
    right: 10,
    top: 8 + legendRow,
    bottom: 22,
  };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const t0 = times.length ? times[0] : 0;
  const t1 = times.length ? times[times.length - 1] + step : 1;
  const x = (t) => margin.left + ((t - t0) / Math.max(1, t1 - t0)) * plotW;
  const y = (v) => margin.top + plotH - (v / top) * plotH;

  // grid and y labels
  const axis = el("g", { class: "axis", "font-size": FONT_PX });
  ticks.forEach((v, i) => {
    const yy = round2(y(v));
    axis.append(el("line", { class: "gridline", x1: margin.left, x2: width - margin.right, y1: yy, y2: yy }));
    axis.append(el("text", { x: margin.left - 6, y: yy, "text-anchor": "end", "dominant-baseline": "middle" }, labels[i]));
  });
  // time ticks
  for (const t of timeTicks(t0, t1, Math.floor(plotW / 64))) {
    const xx = round2(x(t));
    axis.append(el("line", { class: "tick", x1: xx, x2: xx, y1: margin.top + plotH, y2: margin.top + plotH + 4 }));
    axis.append(el("text", { x: xx, y: height - 5, "text-anchor": "middle" }, clockLabel(t)));
  }
  axis.append(el("line", { class: "baseline", x1: margin.left, x2: width - margin.right, y1: margin.top + plotH, y2: margin.top + plotH }));
  svg.append(axis);

  series.forEach((s, index) => {
    const group = el("g", { class: `series series-${index}`, "data-series-group": s.name });
    let d = "";
    let pen = false;
    const points = [];
    s.values.forEach((v, i) => {
      if (typeof v !== "number" || !Number.isFinite(v)) {
        pen = false;
        return;
      }
      const px = round2(x(times[i] + step / 2));
      const py = round2(y(v));
      d += `${pen ? "L" : "M"}${px} ${py} `;
      pen = true;
      const point = el("circle", { class: "point", cx: px, cy: py, r: 2.5, "data-value": v, "data-series": s.name, "data-t": times[i] });
      point.append(el("title", {}, `${s.label} ${clockLabel(times[i])}: ${format(v)}`));
      points.push(point);
    });
    if (d) group.append(el("path", { class: "line", d: d.trim(), fill: "none" }));
    group.append(...points);
    svg.append(group);
  });

  if (series.length > 1) {
    const legend = el("g", { class: "legend", "font-size": FONT_PX });
    let lx = margin.left;
    series.forEach((s, index) => {
      const item = el("g", { class: `series series-${index}` });
      item.append(el("line", { class: "line", x1: lx, x2: lx + 16, y1: 9, y2: 9 }));
      item.append(el("text", { x: lx + 20, y: 9, "dominant-baseline": "middle" }, s.label));
      legend.append(item);
      lx += 20 + s.label.length * CHAR_PX + 16;
    });
    svg.append(legend);
  }

  if (!all.length) {
    svg.append(el("text", { class: "empty", x: margin.left + plotW / 2, y: margin.top + plotH / 2, "text-anchor": "middle", "font-size": FONT_PX + 1 }, "No data in this window"));
  }
}

/**
 * A bar chart.
 *   bars: [{label, value, className?}]
 *   format: value -> text above the bar
 */
export function barChart(svg, { title, description = "", width = 400, height = 180, bars, format = String, emptyText = "No data" }) {
  width = Math.max(200, Math.round(width));
  begin(svg, { title, description, width, height });

  const values = bars.map((b) => b.value);
  const ticks = yTicks(values.length ? Math.max(...values) : 0);
  const top = ticks[ticks.length - 1];
  const margin = { left: 8, right: 8, top: 18, bottom: 22 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const base = margin.top + plotH;

  svg.append(el("line", { class: "baseline", x1: margin.left, x2: width - margin.right, y1: base, y2: base }));
  if (!bars.length) {
    svg.append(el("text", { class: "empty", x: width / 2, y: margin.top + plotH / 2, "text-anchor": "middle", "font-size": FONT_PX + 1 }, emptyText));
    return;
  }

  const slot = plotW / bars.length;
  const barW = Math.max(4, Math.min(64, slot * 0.6));
  const group = el("g", { class: "bars", "font-size": FONT_PX });
  bars.forEach((b, i) => {
    const cx = margin.left + slot * (i + 0.5);
    const h = (b.value / top) * plotH;
    const rect = el("rect", {
      class: `bar ${b.className ?? ""}`.trim(),
      x: round2(cx - barW / 2),
      y: round2(base - h),
      width: round2(barW),
      height: round2(h),
      "data-value": b.value,
      "data-label": b.label,
    });
    rect.append(el("title", {}, `${b.label}: ${format(b.value)}`));
    group.append(rect);
    group.append(el("text", { class: "value", x: round2(cx), y: round2(base - h - 4), "text-anchor": "middle" }, format(b.value)));
    group.append(el("text", { class: "label", x: round2(cx), y: height - 6, "text-anchor": "middle" }, b.label));
  });
  svg.append(group);
}

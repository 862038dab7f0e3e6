// Hand-written SVG charts: time series (columns, lines, areas; stacked; a second axis) and a
// horizontal bar list. Colours come from CSS (classes s1..s6), so charts follow the theme.
// Charts redraw on resize, show a tooltip on hover, and can be read with the arrow keys.

import { h, mount } from "./dom.js";

function niceStep(range, ticks) {
  const raw = range / Math.max(1, ticks);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
  // Guard against rounding (e.g. 0.30000000000000004).
  return Number((step * mag).toPrecision(6));
}

/**
 * A scale of exactly `ticks` intervals covering `max`, each a nice step (1, 2, 2.5 or 5 times
 * a power of ten), so two axes can share gridlines.
 */
export function niceScale(max, ticks = 4, integer = false) {
  if (!(max > 0)) return { max: integer ? ticks : 1, step: integer ? 1 : 1 / ticks };
  let step = niceStep(max, ticks);
  if (integer) step = Math.max(1, Math.ceil(step));
  return { max: step * ticks, step };
}

const approxWidth = (s) => String(s).length * 6.4 + 4;

/**
 * timeChart(el, {labels, tipLabels, series: [{name, values, cls: "s1", type: "bar"|"line"|"area",
 *   axis: "left"|"right", stack: "a", format}], leftFormat, rightFormat, empty, ariaLabel})
 * Returns {update(opts), destroy()}.
 */
export function timeChart(el, opts) {
  let o = opts;
  let active = -1;
  el.classList.add("chart");
  el.tabIndex = 0;
  el.setAttribute("role", "img");

  const tip = h("div.chart-tip", { hidden: true, "aria-hidden": "true" });

  function layout() {
    const W = Math.max(240, el.clientWidth || 600);
    const H = Math.max(140, el.clientHeight || 240);
    const labels = o.labels || [];
    const n = labels.length;
    const series = o.series || [];
    const left = series.filter((s) => s.axis !== "right");
    const right = series.filter((s) => s.axis === "right");
    const maxFor = (list) => {
      let m = 0;
      for (let i = 0; i < n; i++) {
        const sums = new Map();
        for (const s of list) {
          const v = Number(s.values[i]) || 0;
          if (s.stack) {
            sums.set(s.stack, (sums.get(s.stack) || 0) + v);
            m = Math.max(m, sums.get(s.stack));
          } else {
            m = Math.max(m, v);
          }
        }
      }
      return m;
    };
    const intLeft = left.every((s) => s.integer);
    const intRight = right.every((s) => s.integer);
    const ls = niceScale(maxFor(left), 4, intLeft);
    const rs = right.length ? niceScale(maxFor(right), 4, intRight) : null;
    const lf = o.leftFormat || String;
    const rf = o.rightFormat || String;
    const leftTicks = [];
    for (let i = 0; i <= 4; i++) leftTicks.push(Number((ls.step * i).toPrecision(6)));
    const rightTicks = rs ? leftTicks.map((_, i) => Number((rs.step * i).toPrecision(6))) : [];
    const padL = Math.max(28, ...leftTicks.map((v) => approxWidth(lf(v)))) + 6;
    const padR = rs ? Math.max(28, ...rightTicks.map((v) => approxWidth(rf(v)))) + 12 : 10;
    const padT = 10;
    const padB = 26;
    const plotW = W - padL - padR;
    const plotH = H - padT - padB;
    const band = n ? plotW / n : plotW;
    const x = (i) => padL + band * (i + 0.5);
    const yL = (v) => padT + plotH - (v / ls.max) * plotH;
    const yR = (v) => padT + plotH - (v / (rs ? rs.max : 1)) * plotH;
    return { W, H, n, labels, series, left, right, ls, rs, leftTicks, rightTicks, lf, rf, padL, padR, padT, padB, plotW, plotH, band, x, yL, yR };
  }

  function draw() {
    const L = layout();
    const { W, H, n, padL, padR, padT, plotH, plotW, band, x } = L;
    const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, "aria-hidden": "true", focusable: "false" });
    const axis = h("g.axis");
    L.leftTicks.forEach((v, i) => {
      const y = L.yL(v);
      svg.append(h("line.gridline", { x1: padL, x2: W - padR, y1: y, y2: y }));
      axis.append(h("text", { x: padL - 8, y: y + 4, "text-anchor": "end" }, L.lf(v)));
      if (L.rs) axis.append(h("text", { x: W - padR + 8, y: y + 4, "text-anchor": "start" }, L.rf(L.rightTicks[i])));
    });
    const maxLabels = Math.max(1, Math.floor(plotW / 64));
    const every = Math.max(1, Math.ceil(n / maxLabels));
    for (let i = 0; i < n; i++) {
      if ((n - 1 - i) % every !== 0) continue;
      axis.append(h("text", { x: x(i), y: padT + plotH + 18, "text-anchor": "middle" }, L.labels[i]));
    }
    svg.append(axis);

    // Columns first (stacked per `stack`, side by side otherwise), then areas, then lines.
    const bars = L.series.filter((s) => s.type === "bar");
    const groups = [];
    for (const s of bars) {
      const key = s.stack || s.name;
      let g = groups.find((gg) => gg.key === key);
      if (!g) groups.push((g = { key, list: [] }));
      g.list.push(s);
    }
    const gap = Math.min(6, band * 0.25);
    const colW = groups.length ? Math.max(1, Math.min(44, (band - gap * 2) / groups.length)) : 0;
    const groupOffset = (band - colW * groups.length) / 2;
    const colG = h("g");
    groups.forEach((g, gi) => {
      for (let i = 0; i < n; i++) {
        let base = 0;
        for (const s of g.list) {
          const v = Number(s.values[i]) || 0;
          if (v <= 0) continue;
          const yFn = s.axis === "right" ? L.yR : L.yL;
          const y0 = yFn(base);
          const y1 = yFn(base + v);
          base += v;
          colG.append(
            h(`rect.col.${s.cls || "s1"}`, {
              x: x(i) - band / 2 + groupOffset + gi * colW,
              y: y1,
              width: Math.max(1, colW - (groups.length > 1 ? 1 : 0)),
              height: Math.max(1, y0 - y1),
              rx: Math.min(3, colW / 4),
              dataset: { i: String(i) },
            }),
          );
        }
      }
    });
    svg.append(colG);
    for (const s of L.series.filter((ss) => ss.type === "area" || ss.type === "line")) {
      const yFn = s.axis === "right" ? L.yR : L.yL;
      const pts = [];
      for (let i = 0; i < n; i++) pts.push([x(i), yFn(Number(s.values[i]) || 0)]);
      if (!pts.length) continue;
      const d = pts.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
      if (s.type === "area" && pts.length > 1) {
        const base = padT + plotH;
        svg.append(h(`path.area.${s.cls}`, { d: `${d}L${pts[pts.length - 1][0].toFixed(1)},${base}L${pts[0][0].toFixed(1)},${base}Z` }));
      }
      svg.append(h(`path.line.${s.cls}`, { d }));
      if (pts.length === 1) svg.append(h(`circle.dot.${s.cls}`, { cx: pts[0][0], cy: pts[0][1], r: 3.5 }));
    }
    svg.append(h("line.baseline", { x1: padL, x2: W - padR, y1: padT + plotH, y2: padT + plotH }));

    // Hover layer.
    const hover = h("g", { visibility: active >= 0 ? "visible" : "hidden" });
    if (active >= 0 && active < n) {
      hover.append(h("line.guide", { x1: x(active), x2: x(active), y1: padT, y2: padT + plotH }));
      for (const s of L.series.filter((ss) => ss.type !== "bar")) {
        const yFn = s.axis === "right" ? L.yR : L.yL;
        hover.append(h(`circle.dot.${s.cls}`, { cx: x(active), cy: yFn(Number(s.values[active]) || 0), r: 4 }));
      }
      for (const r of colG.querySelectorAll("rect")) {
        if (r.dataset.i !== String(active)) r.classList.add("dim");
      }
    }
    svg.append(hover);
    const overlay = h("rect", { x: padL, y: padT, width: Math.max(0, plotW), height: Math.max(0, plotH), fill: "transparent" });
    overlay.addEventListener("pointermove", (ev) => {
      const rect = el.getBoundingClientRect();
      const px = ((ev.clientX - rect.left) / rect.width) * W;
      const i = Math.max(0, Math.min(n - 1, Math.floor((px - padL) / band)));
      if (i !== active) {
        active = i;
        draw();
      }
    });
    overlay.addEventListener("pointerleave", () => {
      active = -1;
      draw();
    });
    svg.append(overlay);

    const empty = !n || L.series.every((s) => s.values.every((v) => !Number(v)));
    const nodes = [svg, tip];
    if (empty) nodes.push(h("div.chart-empty", o.empty || "No usage in this period yet"));
    mount(el, ...nodes);
    el.setAttribute("aria-label", o.ariaLabel || summary(L));
    renderTip(L);
  }

  function summary(L) {
    const parts = L.series.map((s) => {
      const total = s.values.reduce((a, b) => a + (Number(b) || 0), 0);
      const fmt = s.format || String;
      return `${s.name}: ${fmt(total)} in total`;
    });
    return `Chart over ${L.n} periods. ${parts.join("; ")}.`;
  }

  function renderTip(L) {
    if (active < 0 || active >= L.n) {
      tip.hidden = true;
      return;
    }
    const title = (o.tipLabels || L.labels)[active];
    mount(
      tip,
      h("div.t", title),
      L.series.map((s) =>
        h(
          "div.r",
          h("span", h(`span.swatch.bg${(s.cls || "s1").slice(1)}`), s.name),
          h("strong", (s.format || String)(Number(s.values[active]) || 0)),
        ),
      ),
    );
    tip.hidden = false;
    const W = el.clientWidth;
    const cx = (L.x(active) / L.W) * W;
    const tw = tip.offsetWidth;
    let left = cx + 14;
    if (left + tw > W) left = cx - tw - 14;
    tip.style.transform = `translate(${Math.max(0, left)}px, ${L.padT}px)`;
  }

  el.addEventListener("keydown", (ev) => {
    const n = (o.labels || []).length;
    if (!n) return;
    if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      active = active < 0 ? (ev.key === "ArrowRight" ? 0 : n - 1) : Math.max(0, Math.min(n - 1, active + (ev.key === "ArrowRight" ? 1 : -1)));
      draw();
      ev.preventDefault();
    } else if (ev.key === "Escape" && active >= 0) {
      active = -1;
      draw();
    }
  });
  el.addEventListener("blur", () => {
    if (active >= 0) {
      active = -1;
      draw();
    }
  });

  let lastW = 0;
  const ro = new ResizeObserver(() => {
    if (el.clientWidth !== lastW) {
      lastW = el.clientWidth;
      draw();
    }
  });
  ro.observe(el);
  draw();
  return {
    update(next) {
      o = next;
      active = -1;
      draw();
    },
    destroy() {
      ro.disconnect();
    },
  };
}

/** A legend for chart series. */
export function legend(series) {
  return h(
    "div.legend",
    series.map((s) => h("span", h(`span.swatch.bg${(s.cls || "s1").slice(1)}`), s.name)),
  );
}

/**
 * A ranked list with bars: items [{name, value, detail}], value formatted by `format`.
 */
export function barList(items, { format = String, cls = "bg1", max, empty = "Nothing yet" } = {}) {
  if (!items.length) return h("div.empty", h("p", empty));
  const top = max ?? Math.max(...items.map((i) => Number(i.value) || 0), 0);
  return h(
    "div.barlist",
    { role: "list" },
    items.map((it) =>
      h(
        "div.item",
        { role: "listitem" },
        h("span.name", { title: it.name }, it.name),
        h("span.val", format(it.value)),
        h("div.bar", h(`span.${it.cls || cls}`, { style: { width: `${top > 0 ? Math.max(1.5, ((Number(it.value) || 0) / top) * 100) : 0}%` } })),
        it.detail ? h("div.detail", it.detail) : null,
      ),
    ),
  );
}

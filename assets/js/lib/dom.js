// DOM building without innerHTML: every string becomes a text node, so server data is never
// parsed as markup.

const SVG_NS = "http://www.w3.org/2000/svg";
const SVG_TAGS = new Set([
  "svg", "g", "path", "rect", "circle", "line", "polyline", "polygon", "text", "title",
  "defs", "linearGradient", "stop", "clipPath", "tspan",
]);
// Set as properties after the children exist (a select's value needs its options).
const LATE_PROPS = new Set(["value", "checked", "selected", "indeterminate"]);

/**
 * h("div.card.card-pad", {id: "x", onclick: fn}, child, [more], "text")
 * Props: class, dataset, style (object), on* handlers, and attributes; `true` sets an empty
 * attribute, null/undefined/false leave it out.
 */
export function h(tag, props, ...children) {
  const [name, ...classes] = tag.split(".");
  const isSvg = SVG_TAGS.has(name);
  const el = isSvg ? document.createElementNS(SVG_NS, name) : document.createElement(name || "div");
  if (classes.length) el.setAttribute("class", classes.join(" "));
  const late = [];
  if (props && (typeof props !== "object" || props instanceof Node || Array.isArray(props))) {
    children.unshift(props);
    props = null;
  }
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") {
        const cur = el.getAttribute("class");
        el.setAttribute("class", cur ? `${cur} ${v}` : v);
      } else if (k === "dataset") {
        Object.assign(el.dataset, v);
      } else if (k === "style" && typeof v === "object") {
        Object.assign(el.style, v);
      } else if (k.startsWith("on") && typeof v === "function") {
        el.addEventListener(k.slice(2).toLowerCase(), v);
      } else if (LATE_PROPS.has(k) && !isSvg) {
        late.push([k, v]);
      } else if (k === "text") {
        el.textContent = String(v);
      } else {
        el.setAttribute(k, v === true ? "" : String(v));
      }
    }
  }
  append(el, children);
  for (const [k, v] of late) el[k] = v;
  return el;
}

export function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false || c === true) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

/** Replace an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

let uid = 0;
export const nextId = (prefix = "id") => `${prefix}-${++uid}`;

/** Debounce a function by `ms`. */
export function debounce(fn, ms = 250) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

// ---------- icons (24x24, stroked) ----------

const ICONS = {
  grid: ["R3,3,7,7,1.5", "R14,3,7,7,1.5", "R14,14,7,7,1.5", "R3,14,7,7,1.5"],
  key: ["C7.5,15.5,4.5", "M10.7 12.3 21 2", "M16 7l3 3", "M18.5 4.5l2 2"],
  server: ["R2,3,20,8,2", "R2,13,20,8,2", "M6 7h.01", "M6 17h.01"],
  chart: ["M3 3v18h18", "M7 15l4-4 3 3 5-6"],
  sliders: ["M4 21v-7", "M4 10V3", "M12 21v-9", "M12 8V3", "M20 21v-5", "M20 12V3", "M1 14h6", "M9 8h6", "M17 16h6"],
  sun: ["C12,12,4", "M12 2v2", "M12 20v2", "M4.9 4.9l1.4 1.4", "M17.7 17.7l1.4 1.4", "M2 12h2", "M20 12h2", "M6.3 17.7l-1.4 1.4", "M19.1 4.9l-1.4 1.4"],
  moon: ["M21 12.8A9 9 0 1 1 11.2 3a7 7 0 0 0 9.8 9.8z"],
  logout: ["M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4", "M16 17l5-5-5-5", "M21 12H9"],
  plus: ["M12 5v14", "M5 12h14"],
  search: ["C11,11,7", "M21 21l-4.3-4.3"],
  copy: ["R9,9,13,13,2", "M5 15H4a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2h9a2 2 0 0 1 2 2v1"],
  edit: ["M12 20h9", "M16.5 3.5a2.1 2.1 0 0 1 3 3L7 19l-4 1 1-4z"],
  trash: ["M3 6h18", "M8 6V4a2 2 0 0 1 2-2h4a2 2 0 0 1 2 2v2", "M19 6l-1 14a2 2 0 0 1-2 2H8a2 2 0 0 1-2-2L5 6"],
  restore: ["M3 12a9 9 0 1 0 3-6.7L3 8", "M3 3v5h5"],
  play: ["M6 4l14 8-14 8z"],
  x: ["M18 6 6 18", "M6 6l12 12"],
  menu: ["M4 6h16", "M4 12h16", "M4 18h16"],
  eye: ["M2 12s3.5-7 10-7 10 7 10 7-3.5 7-10 7S2 12 2 12z", "C12,12,3"],
  eyeOff: ["M3 3l18 18", "M10.6 5.1A10 10 0 0 1 12 5c6.5 0 10 7 10 7a17 17 0 0 1-2.2 3.2", "M6.6 6.6C3.9 8.3 2 12 2 12s3.5 7 10 7a9.7 9.7 0 0 0 5.4-1.6", "M9.9 9.9a3 3 0 0 0 4.2 4.2"],
  check: ["M20 6 9 17l-5-5"],
  alert: ["C12,12,10", "M12 8v4", "M12 16h.01"],
  info: ["C12,12,10", "M12 16v-4", "M12 8h.01"],
  refresh: ["M21 12a9 9 0 1 1-3-6.7L21 8", "M21 3v5h-5"],
  activity: ["M22 12h-4l-3 9L9 3l-3 9H2"],
  dollar: ["M12 2v20", "M17 5H9.5a3.5 3.5 0 0 0 0 7h5a3.5 3.5 0 0 1 0 7H6"],
  layers: ["M12 2 2 7l10 5 10-5z", "M2 17l10 5 10-5", "M2 12l10 5 10-5"],
  zap: ["M13 2 3 14h9l-1 8 10-12h-9z"],
  list: ["M8 6h13", "M8 12h13", "M8 18h13", "M3 6h.01", "M3 12h.01", "M3 18h.01"],
  external: ["M15 3h6v6", "M10 14 21 3", "M18 13v6a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2h6"],
  lock: ["R3,11,18,11,2", "M7 11V7a5 5 0 0 1 10 0v4"],
  shield: ["M12 22s8-4 8-10V5l-8-3-8 3v7c0 6 8 10 8 10z"],
  clock: ["C12,12,10", "M12 6v6l4 2"],
  warn: ["M10.3 3.9 1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z", "M12 9v4", "M12 17h.01"],
  pause: ["R6,4,4,16,1", "R14,4,4,16,1"],
  inbox: ["M22 12h-6l-2 3h-4l-2-3H2", "M5.5 5.1 2 12v6a2 2 0 0 0 2 2h16a2 2 0 0 0 2-2v-6l-3.5-6.9A2 2 0 0 0 16.8 4H7.2a2 2 0 0 0-1.7 1.1z"],
  logo: ["M6 13.1a6 6 0 0 1 10.5-4", "M18 10.9a6 6 0 0 1-10.5 4", "M16.8 4.9v4.2h-4.2", "M7.2 19.1v-4.2h4.2"],
};

/** An inline SVG icon; decorative unless `label` is given. */
export function icon(name, label) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon");
  if (label) {
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
  } else {
    svg.setAttribute("aria-hidden", "true");
  }
  for (const d of ICONS[name] || ICONS.info) {
    let el;
    if (d[0] === "R") {
      const [x, y, w, hh, rx] = d.slice(1).split(",");
      el = document.createElementNS(SVG_NS, "rect");
      el.setAttribute("x", x);
      el.setAttribute("y", y);
      el.setAttribute("width", w);
      el.setAttribute("height", hh);
      if (rx) el.setAttribute("rx", rx);
    } else if (d[0] === "C") {
      const [cx, cy, r] = d.slice(1).split(",");
      el = document.createElementNS(SVG_NS, "circle");
      el.setAttribute("cx", cx);
      el.setAttribute("cy", cy);
      el.setAttribute("r", r);
    } else {
      el = document.createElementNS(SVG_NS, "path");
      el.setAttribute("d", d);
    }
    svg.appendChild(el);
  }
  return svg;
}

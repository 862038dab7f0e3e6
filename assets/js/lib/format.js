// Number, money and time formatting. Numbers use thousands separators; money is US dollars
// with as many decimals as the amount needs.

const LOCALE = "en-US";
const intFmt = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 0 });
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

const num = (v) => {
  const n = typeof v === "number" ? v : Number(v);
  return Number.isFinite(n) ? n : 0;
};

/** 1234567 -> "1,234,567" */
export function int(v) {
  return intFmt.format(Math.round(num(v)));
}

/** 1234567 -> "1.23M"; small numbers stay exact. */
export function compact(v) {
  const n = num(v);
  const a = Math.abs(n);
  if (a < 10_000) return int(n);
  const units = [
    [1e12, "T"],
    [1e9, "B"],
    [1e6, "M"],
    [1e3, "K"],
  ];
  for (const [size, unit] of units) {
    if (a >= size) {
      const x = n / size;
      const digits = Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2;
      return `${trimZeros(x.toFixed(digits))}${unit}`;
    }
  }
  return int(n);
}

function trimZeros(s) {
  return s.includes(".") ? s.replace(/\.?0+$/, "") : s;
}

/** Dollars: "$1,234.56", "$0.0421", "$0.000318", "$0.00". */
export function money(v) {
  const n = num(v);
  const a = Math.abs(n);
  const sign = n < 0 ? "-" : "";
  if (a === 0) return "$0.00";
  if (a < 0.000001) return `${sign}<$0.000001`;
  let min = 2;
  let max = 2;
  if (a < 0.01) {
    min = 4;
    max = 6;
  } else if (a < 1) {
    min = 2;
    max = 4;
  }
  return `${sign}$${a.toLocaleString(LOCALE, { minimumFractionDigits: min, maximumFractionDigits: max })}`;
}

/** Short dollars for chart axes: "$1.2K", "$0.35". */
export function moneyShort(v) {
  const n = num(v);
  const a = Math.abs(n);
  if (a >= 1000) return `$${compact(n)}`;
  if (a >= 10) return `$${trimZeros(n.toFixed(0))}`;
  if (a >= 1) return `$${trimZeros(n.toFixed(1))}`;
  if (a === 0) return "$0";
  return `$${trimZeros(n.toPrecision(2))}`;
}

export function percent(v, digits = 1) {
  const n = num(v);
  if (n === 0) return "0%";
  if (Math.abs(n) < 0.001) return "<0.1%";
  return `${trimZeros((n * 100).toFixed(digits))}%`;
}

function toDate(v) {
  if (v === null || v === undefined || v === "") return null;
  const d = typeof v === "number" ? new Date(v) : new Date(String(v));
  return Number.isNaN(d.getTime()) ? null : d;
}

const pad = (n) => String(n).padStart(2, "0");

/** "Nov 22, 2026, 14:05" (local time). */
export function dateTime(v, { seconds = false, year = true } = {}) {
  const d = toDate(v);
  if (!d) return "—";
  const y = year && d.getFullYear() !== new Date().getFullYear() ? `, ${d.getFullYear()}` : "";
  const s = seconds ? `:${pad(d.getSeconds())}` : "";
  return `${MONTHS[d.getMonth()]} ${d.getDate()}${y}, ${pad(d.getHours())}:${pad(d.getMinutes())}${s}`;
}

/** "Nov 22, 2026" */
export function date(v) {
  const d = toDate(v);
  if (!d) return "—";
  return `${MONTHS[d.getMonth()]} ${d.getDate()}, ${d.getFullYear()}`;
}

/** "just now", "5 min ago", "in 3 days". */
export function relative(v, now = Date.now()) {
  const d = toDate(v);
  if (!d) return "never";
  const diff = d.getTime() - now;
  const a = Math.abs(diff);
  const future = diff > 0;
  const wrap = (s) => (future ? `in ${s}` : `${s} ago`);
  if (a < 45_000) return future ? "in a moment" : "just now";
  if (a < 3_600_000) return wrap(`${Math.round(a / 60_000)} min`);
  if (a < 86_400_000) return wrap(`${Math.round(a / 3_600_000)} h`);
  const days = Math.round(a / 86_400_000);
  if (days < 45) return wrap(`${days} day${days === 1 ? "" : "s"}`);
  return date(d);
}

/** 1234 ms -> "1.23 s"; 340 -> "340 ms". */
export function ms(v) {
  const n = num(v);
  if (n < 1000) return `${int(n)} ms`;
  if (n < 60_000) return `${trimZeros((n / 1000).toFixed(2))} s`;
  return `${Math.floor(n / 60_000)} min ${Math.round((n % 60_000) / 1000)} s`;
}

/** Seconds until something -> "3h 12m", "2d 4h", "45m", "under a minute". */
export function until(seconds) {
  const n = Math.max(0, Math.floor(num(seconds)));
  const d = Math.floor(n / 86_400);
  const hr = Math.floor((n % 86_400) / 3600);
  const m = Math.floor((n % 3600) / 60);
  if (d > 0) return `${d}d ${hr}h`;
  if (hr > 0) return `${hr}h ${m}m`;
  if (m > 0) return `${m}m`;
  return "under a minute";
}

/** Minutes -> "5 min", "2 h", "1 day". */
export function minutes(v) {
  const n = num(v);
  if (n <= 0) return "—";
  if (n % 1440 === 0) return `${n / 1440} day${n === 1440 ? "" : "s"}`;
  if (n % 60 === 0) return `${n / 60} h`;
  return `${int(n)} min`;
}

/** A usage-trend period ("2026-11-22" or "2026-11-22T11") as a short label. */
export function periodLabel(p, { withDay = false } = {}) {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}))?/.exec(String(p || ""));
  if (!m) return String(p ?? "");
  const day = `${MONTHS[Number(m[2]) - 1]} ${Number(m[3])}`;
  if (m[4] === undefined) return day;
  return withDay ? `${day}, ${m[4]}:00` : `${m[4]}:00`;
}

/** Today's date in local time as "YYYY-MM-DD". */
export function isoDay(d = new Date()) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** A Date as the value of an <input type="datetime-local">. */
export function toLocalInput(v) {
  const d = toDate(v);
  if (!d) return "";
  return `${isoDay(d)}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A window length for "per ...": 60 -> "hour", 300 -> "5 minutes", 2880 -> "2 days". */
export function per(minutesValue) {
  const n = num(minutesValue);
  if (n === 1) return "minute";
  if (n === 60) return "hour";
  if (n === 1440) return "day";
  if (n % 1440 === 0) return `${n / 1440} days`;
  if (n % 60 === 0) return `${n / 60} hours`;
  return `${int(n)} minutes`;
}

export function plural(n, one, many = `${one}s`) {
  return `${int(n)} ${num(n) === 1 ? one : many}`;
}

/**
 * The benchmark's bar chart, written by hand as SVG: a dependency for one chart type would be
 * more code to trust than this. Horizontal bars (the peer labels are long), one per target in
 * report order, the median's value at the bar's end and a whisker from the slowest to the
 * fastest round over it, so that a reader sees at once whether two bars differ by more than
 * their rounds do. Readable on GitHub's light theme and standalone in a browser.
 */

/** One bar: a target's median over rounds, with the min and max over rounds as a whisker. */
export interface Bar {
  label: string;
  median: number;
  min: number;
  max: number;
  /** Bars of one group share a colour (the front end: nginx, lighttpd); the legend names them. */
  group?: string;
  /** Lodestone's own bars: an accent colour and a bold label. */
  highlight?: boolean;
  /**
   * A reference far above the rest (nginx's `return 200`, lighttpd serving the page itself):
   * it does not set the axis, or every FastCGI peer would be a sliver beside it. When it runs
   * past the axis it is drawn to the axis end with a break mark, its value printed as usual.
   */
  reference?: boolean;
}

export interface ChartOptions {
  title: string;
  /** The value's unit, e.g. "req/s": axis caption. */
  unit: string;
  subtitle?: string;
}

// Layout, in px. Text width is estimated from the character count: no font metrics in Node.
const CHAR_W = 6.6;
const FONT = 12;
const ROW = 24;
const BAR_H = 16;
const PLOT_W = 520;
const PAD = 16;
const GROUP_COLOURS = ['#9aa5b1', '#c7b48a', '#a3c4a8', '#b8a6c9', '#d4a59a'];
const ACCENT = '#2f6fbf';

/** XML text and attribute escaping. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** A value fit to draw: NaN, infinities and negatives are 0. */
const clean = (n: number): number => (Number.isFinite(n) && n > 0 ? n : 0);
/** Attribute numbers: at most one decimal, never "-0". */
const num = (n: number): string => String(Math.round(n * 10) / 10 + 0);
const thousands = (n: number): string => Math.round(n).toLocaleString('en-US');

/**
 * Axis ticks from 0 to at least `max`: a step of 1, 2 or 5 x 10^n, chosen so that there are at
 * most `most` steps; the last tick is the axis end.
 */
export function niceTicks(max: number, most = 6): number[] {
  const top = clean(max);
  if (top === 0) return [0, 1];
  const raw = top / most;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => top / s <= most) ?? 10 * power;
  const ticks: number[] = [];
  for (let t = 0; ticks.length === 0 || ticks[ticks.length - 1]! < top; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

/** Renders a horizontal bar chart as a standalone SVG document. */
export function barChart(bars: readonly Bar[], options: ChartOptions): string {
  const title = escapeXml(options.title);
  const subtitle = options.subtitle !== undefined ? escapeXml(options.subtitle) : null;
  const headH = PAD + FONT + 6 + (subtitle !== null ? FONT + 4 : 0);
  const groups = [...new Set(bars.map((b) => b.group).filter((g): g is string => g !== undefined))];
  const colour = (b: Bar): string => (b.highlight === true ? ACCENT : GROUP_COLOURS[Math.max(0, groups.indexOf(b.group ?? '')) % GROUP_COLOURS.length]!);
  // Bold labels run about a tenth wider.
  const labelW = Math.ceil(Math.max(60, ...bars.map((b) => b.label.length * CHAR_W * (b.highlight === true ? 1.1 : 1))));
  const x0 = PAD + labelW + 8;
  // References set the axis only when there is nothing else.
  const scaled = bars.some((b) => b.reference !== true) ? bars.filter((b) => b.reference !== true) : bars;
  const ticks = niceTicks(Math.max(0, ...scaled.map((b) => Math.max(clean(b.max), clean(b.median)))));
  const axisMax = ticks[ticks.length - 1]!;
  const x = (v: number): number => x0 + (Math.min(clean(v), axisMax) / axisMax) * PLOT_W;
  const broken = (b: Bar): boolean => Math.max(clean(b.median), clean(b.max)) > axisMax;
  const plotTop = headH + 8;
  const plotH = Math.max(1, bars.length) * ROW;
  const legendH = groups.length > 0 || bars.some((b) => b.highlight === true) ? ROW : 0;
  const valueText = (b: Bar): string => `${thousands(clean(b.median))}${broken(b) ? ' (off scale)' : ''}`;
  const valueW = Math.ceil(Math.max(70, ...bars.map((b) => valueText(b).length * CHAR_W + 12)));
  const width = x0 + PLOT_W + valueW + PAD;
  const height = plotTop + plotH + 36 + legendH + PAD;
  const out: string[] = [];
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${num(width)}" height="${num(height)}" viewBox="0 0 ${num(width)} ${num(height)}" ` +
      `font-family="-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="${FONT}">`,
  );
  out.push(`<title>${title}</title>`);
  out.push(`<rect x="0" y="0" width="${num(width)}" height="${num(height)}" fill="#ffffff"/>`);
  out.push(`<text x="${PAD}" y="${PAD + FONT}" font-size="${FONT + 2}" font-weight="bold" fill="#1f2328">${title}</text>`);
  if (subtitle !== null) out.push(`<text x="${PAD}" y="${PAD + 2 * FONT + 6}" fill="#57606a">${subtitle}</text>`);
  if (bars.length === 0) {
    out.push(`<text x="${num(x0)}" y="${num(plotTop + ROW / 2 + 4)}" fill="#57606a">no data</text>`);
  }
  // Grid and axis.
  const axisY = plotTop + plotH;
  for (const t of ticks) {
    const tx = x(t);
    out.push(`<line class="grid" x1="${num(tx)}" y1="${num(plotTop)}" x2="${num(tx)}" y2="${num(axisY)}" stroke="#d0d7de" stroke-width="1"/>`);
    out.push(`<text class="tick" x="${num(tx)}" y="${num(axisY + 14)}" text-anchor="middle" fill="#57606a">${thousands(t)}</text>`);
  }
  out.push(`<line x1="${num(x0)}" y1="${num(axisY)}" x2="${num(x0 + PLOT_W)}" y2="${num(axisY)}" stroke="#57606a" stroke-width="1"/>`);
  out.push(`<text x="${num(x0 + PLOT_W / 2)}" y="${num(axisY + 30)}" text-anchor="middle" fill="#1f2328">${escapeXml(options.unit)}</text>`);
  // Bars, values, whiskers.
  for (const [i, b] of bars.entries()) {
    const top = plotTop + i * ROW + (ROW - BAR_H) / 2;
    const mid = top + BAR_H / 2;
    const label = escapeXml(b.label);
    out.push(
      `<text class="label" x="${num(x0 - 8)}" y="${num(mid + 4)}" text-anchor="end" fill="#1f2328"${b.highlight === true ? ' font-weight="bold"' : ''}>${label}</text>`,
    );
    out.push(
      `<rect class="bar" x="${num(x0)}" y="${num(top)}" width="${num(x(b.median) - x0)}" height="${BAR_H}" fill="${colour(b)}">` +
        `<title>${label}: ${thousands(clean(b.median))} ${escapeXml(options.unit)} (min ${thousands(clean(b.min))}, max ${thousands(clean(b.max))})</title></rect>`,
    );
    const lo = x(Math.min(clean(b.min), clean(b.max)));
    const hi = x(Math.max(clean(b.min), clean(b.max)));
    if (broken(b)) {
      // Off the scale: two white slashes across the bar's end say so; no whisker on a cut bar.
      const bx = x0 + PLOT_W - 14;
      out.push(
        `<g class="break" stroke="#ffffff" stroke-width="2.5">` +
          `<line x1="${num(bx - 3)}" y1="${num(top + BAR_H + 2)}" x2="${num(bx + 3)}" y2="${num(top - 2)}"/>` +
          `<line x1="${num(bx + 3)}" y1="${num(top + BAR_H + 2)}" x2="${num(bx + 9)}" y2="${num(top - 2)}"/></g>`,
      );
    } else {
      out.push(
        `<g class="whisker" stroke="#1f2328" stroke-width="1.2">` +
          `<line x1="${num(lo)}" y1="${num(mid)}" x2="${num(hi)}" y2="${num(mid)}"/>` +
          `<line x1="${num(lo)}" y1="${num(mid - 5)}" x2="${num(lo)}" y2="${num(mid + 5)}"/>` +
          `<line x1="${num(hi)}" y1="${num(mid - 5)}" x2="${num(hi)}" y2="${num(mid + 5)}"/></g>`,
      );
    }
    out.push(`<text class="value" x="${num(Math.max(hi, x(b.median)) + 6)}" y="${num(mid + 4)}" fill="#1f2328">${valueText(b)}</text>`);
  }
  // Legend: the colours of the groups, and Lodestone's accent.
  if (legendH > 0) {
    let lx = x0;
    const ly = axisY + 40;
    const entries: Array<[string, string]> = groups.map((g, i) => [GROUP_COLOURS[i % GROUP_COLOURS.length]!, `via ${g}`]);
    if (bars.some((b) => b.highlight === true)) entries.push([ACCENT, 'Lodestone']);
    for (const [fill, text] of entries) {
      out.push(`<rect x="${num(lx)}" y="${num(ly)}" width="12" height="12" fill="${fill}"/>`);
      out.push(`<text x="${num(lx + 16)}" y="${num(ly + 10)}" fill="#1f2328">${escapeXml(text)}</text>`);
      lx += 16 + text.length * CHAR_W + 18;
    }
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** The benchmark's SVG bar chart: well-formed, to scale, whiskers where the rounds were, robust. */
import assert from 'node:assert/strict';
import test from 'node:test';
import { barChart, escapeXml, niceTicks, type Bar } from '../lib/svg.js';

/**
 * A small XML well-formedness check: one root element, every tag closed in order, attribute
 * values quoted, and no `&` or `<` in text or attributes that is not markup or an entity.
 */
function assertWellFormed(xml: string): void {
  const body = xml.replace(/^<\?xml [^?]*\?>\s*/, '');
  const stack: string[] = [];
  let roots = 0;
  const token = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)/gy;
  let pos = 0;
  while (pos < body.length) {
    token.lastIndex = pos;
    const m = token.exec(body);
    assert.ok(m, `not well-formed at ${pos}: ${JSON.stringify(body.slice(pos, pos + 60))}`);
    pos = token.lastIndex;
    const [, closing, name, attrs, selfClosing, text] = m;
    const raw = text ?? attrs ?? '';
    assert.ok(!/&(?!(amp|lt|gt|quot|apos|#\d+);)/.test(raw), `raw & in ${JSON.stringify(raw.slice(0, 60))}`);
    if (text !== undefined) {
      if (stack.length === 0) assert.match(text, /^\s*$/, 'text outside the root element');
      continue;
    }
    if (closing === '/') {
      assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
    } else {
      if (stack.length === 0) roots++;
      if (selfClosing !== '/') stack.push(name!);
    }
  }
  assert.deepEqual(stack, [], 'unclosed elements');
  assert.equal(roots, 1, 'exactly one root element');
  assert.match(body, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
}

const attr = (tag: string, name: string): number => Number(new RegExp(`\\s${name}="([^"]*)"`).exec(tag)![1]);
const tags = (svg: string, cls: string): string[] => [...svg.matchAll(new RegExp(`<[a-z]+ class="${cls}"[^>]*>`, 'g'))].map((m) => m[0]);
const whiskers = (svg: string): Array<{ lo: number; hi: number }> =>
  [...svg.matchAll(/<g class="whisker"[^>]*><line x1="([\d.]+)"[^>]* x2="([\d.]+)"/g)].map((m) => ({ lo: Number(m[1]), hi: Number(m[2]) }));

const sample: Bar[] = [
  { label: 'Lodestone Lua hello <&> "quoted" \'x\'', median: 1000, min: 900, max: 1100, group: 'nginx', highlight: true },
  { label: 'libfcgi (C)', median: 3000, min: 2500, max: 3200, group: 'nginx' },
  { label: 'mod_magnet', median: 2000, min: 2000, max: 2000, group: 'lighttpd' },
];

test('well-formed standalone SVG, labels escaped, title and values present', () => {
  const svg = barChart(sample, { title: 'hello & more <req/s>', unit: 'req/s', subtitle: "2026 'x'" });
  assertWellFormed(svg);
  assert.ok(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<svg '));
  assert.ok(svg.includes('<title>hello &amp; more &lt;req/s&gt;</title>'));
  assert.ok(svg.includes('Lodestone Lua hello &lt;&amp;&gt; &quot;quoted&quot; &apos;x&apos;'));
  for (const v of ['1,000', '3,000', '2,000']) assert.ok(svg.includes(`>${v}</text>`), v);
  assert.match(svg, /<rect x="0" y="0" width="[\d.]+" height="[\d.]+" fill="#ffffff"\/>/);
  assert.ok(svg.includes('via nginx') && svg.includes('via lighttpd') && svg.includes('>Lodestone</text>'));
});

test('bar lengths are proportional to the medians, whiskers span min to max on the same scale', () => {
  const svg = barChart(sample, { title: 't', unit: 'req/s' });
  const bars = tags(svg, 'bar');
  assert.equal(bars.length, 3);
  const widths = bars.map((b) => attr(b, 'width'));
  const x0 = attr(bars[0]!, 'x');
  assert.ok(Math.abs(widths[1]! / widths[0]! - 3) < 0.01, `ratio ${widths[1]! / widths[0]!}`);
  assert.ok(Math.abs(widths[2]! / widths[0]! - 2) < 0.01);
  const scale = widths[0]! / 1000;
  const w = whiskers(svg);
  assert.equal(w.length, 3, 'a whisker for every bar');
  sample.forEach((b, i) => {
    assert.ok(Math.abs(w[i]!.lo - (x0 + b.min * scale)) < 0.2, `whisker ${i} low end`);
    assert.ok(Math.abs(w[i]!.hi - (x0 + b.max * scale)) < 0.2, `whisker ${i} high end`);
  });
  // The axis reaches past the largest max, on a nice number.
  const ticks = tags(svg, 'tick');
  const last = svg.match(/<text class="tick"[^>]*>([\d,]+)<\/text>/g)!.map((t) => Number(/>([\d,]+)</.exec(t)![1]!.replace(/,/g, '')));
  assert.equal(ticks.length, last.length);
  assert.ok(last[last.length - 1]! >= 3200);
});

test('nice ticks: 1, 2 or 5 times a power of ten, ending at or past the maximum', () => {
  assert.deepEqual(niceTicks(3200), [0, 1000, 2000, 3000, 4000]);
  assert.deepEqual(niceTicks(112_692), [0, 20_000, 40_000, 60_000, 80_000, 100_000, 120_000]);
  assert.deepEqual(niceTicks(0.7), [0, 0.2, 0.4, 0.6, 0.8]);
  assert.deepEqual(niceTicks(0), [0, 1]);
  for (const max of [1, 7, 95, 1234, 99_999, 5e6]) {
    const t = niceTicks(max);
    const step = t[1]! - t[0]!;
    const mantissa = step / 10 ** Math.floor(Math.log10(step));
    assert.ok([1, 2, 5].includes(Number(mantissa.toPrecision(6))), `step ${step} for ${max}`);
    assert.ok(t[t.length - 1]! >= max && t.length <= 7, `ticks ${t.join(',')} for ${max}`);
  }
});

test('bad numbers never reach the document; no bars is still a valid chart', () => {
  const svg = barChart(
    [
      { label: 'nan', median: NaN, min: NaN, max: NaN },
      { label: 'inf', median: Infinity, min: -5, max: Infinity },
      { label: 'ok', median: 10, min: 10, max: 10 },
    ],
    { title: 't', unit: 'req/s' },
  );
  assertWellFormed(svg);
  assert.ok(!/NaN|Infinity|[">]-[\d.]/.test(svg.replace(/<title>[^<]*<\/title>/g, '')), 'no NaN, Infinity or negative numbers');
  const empty = barChart([], { title: 'nothing', unit: 'req/s' });
  assertWellFormed(empty);
  assert.ok(empty.includes('>no data</text>'));
});

test('escapeXml covers the five special characters', () => {
  assert.equal(escapeXml(`<a href="x">&'</a>`), '&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;');
});

test('a reference bar far above the peers does not set the scale: cut at the axis end with a break mark', () => {
  const bars: Bar[] = [
    { label: 'nginx ceiling', median: 100_000, min: 99_000, max: 101_000, group: 'nginx', reference: true },
    ...sample,
  ];
  const svg = barChart(bars, { title: 't', unit: 'req/s' });
  assertWellFormed(svg);
  const widths = tags(svg, 'bar').map((b) => attr(b, 'width'));
  // The peers keep the scale they have without the reference: libfcgi is 3x Lodestone.
  assert.ok(Math.abs(widths[2]! / widths[1]! - 3) < 0.01);
  // The axis ends at 4,000 (from the peers' 3,200), and the reference is drawn to its end, no further.
  const ticks = [...svg.matchAll(/<text class="tick"[^>]*>([\d,]+)<\/text>/g)].map((m) => Number(m[1]!.replace(/,/g, '')));
  assert.equal(ticks[ticks.length - 1], 4000);
  const plotW = (widths[2]! / 3000) * 4000;
  assert.ok(Math.abs(widths[0]! - plotW) < 0.2, `reference width ${widths[0]} vs plot ${plotW}`);
  assert.equal(tags(svg, 'break').length, 1, 'one break mark');
  assert.equal(whiskers(svg).length, 3, 'no whisker on the cut bar');
  assert.ok(svg.includes('>100,000 (off scale)</text>'));
  // A reference that fits is an ordinary bar; references alone set the axis themselves.
  const fits = barChart([{ ...bars[0]!, median: 2000, min: 1900, max: 2100 }, ...sample], { title: 't', unit: 'req/s' });
  assert.equal(tags(fits, 'break').length, 0);
  const alone = barChart([bars[0]!], { title: 't', unit: 'req/s' });
  assert.equal(tags(alone, 'break').length, 0);
  assert.ok(alone.includes('>100,000</text>'));
});

/**
 * The render page and the compute loop, shared by the render scenario and micro: what every
 * peer's script must send, computed here the same way, so a peer that renders differently (or
 * fails halfway) is caught before it is timed. The scripts themselves are bench/peers/render.*.
 */
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../../test/shared/repo.js';

/** Rows in the table. */
export const RENDER_ROWS = 200;

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/**
 * The body every render peer sends: a RENDER_ROWS-row table (id, name escaped for HTML, price
 * with two decimals), rows joined by "\n" inside `<table>...</table>`, and print's newline.
 */
export function renderPage(): string {
  const rows: string[] = [];
  for (let i = 1; i <= RENDER_ROWS; i++) {
    const name = `item ${i} & co`.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
    // i * 1.25 is a multiple of 0.25, exact in binary: %.2f and toFixed(2) cannot round apart.
    rows.push(`<tr><td>${i}</td><td>${name}</td><td>${(i * 1.25).toFixed(2)}</td></tr>`);
  }
  return `<table>${rows.join('\n')}</table>\n`;
}

/** A peer's script, read from bench/peers/. */
export function peerScript(name: string): string {
  return fs.readFileSync(path.join(repoRoot, 'bench/peers', name), 'utf8');
}

/** Steps of the compute loop. */
export const COMPUTE_STEPS = 20_000;

/**
 * The compute loop, pure arithmetic with no strings or tables until the one print: every
 * value stays below 2^31, so Lua's integers and JS's doubles give the same digits.
 */
export const COMPUTE_SOURCE = {
  lua: `local x = 0\nfor i = 1, ${COMPUTE_STEPS} do x = (x * 31 + i) % 1000003 end\nprint(x)\n`,
  js: `let x = 0;\nfor (let i = 1; i <= ${COMPUTE_STEPS}; i++) x = (x * 31 + i) % 1000003;\nprint(x);\n`,
};

/** What the compute loop prints. */
export function computeOutput(): string {
  let x = 0;
  for (let i = 1; i <= COMPUTE_STEPS; i++) x = (x * 31 + i) % 1000003;
  return `${x}\n`;
}

/**
 * The ~2,000-line module of the modules measurement (issue 21: "a hello script that requires a
 * ~2,000-line module"), generated the same way in Lua and JS: a utility library of small
 * functions (string, table and number helpers, each a dozen lines) and a few constant tables,
 * what a site's `lib/util.lua` looks like. Generated rather than copied from a project so that
 * the two languages hold the same code, line for line.
 */

/** Functions in the module; each is 12 lines, so the module is ~12 x this long. */
export const BIG_MODULE_FUNCTIONS = 160;

/** The module's name in require(). */
export const BIG_MODULE_NAME = 'bench.util';

/** The module source in each language (Lua returns its table; JS fills module.exports). */
export function bigModule(): { lua: string; js: string; lines: number } {
  const lua: string[] = ['local M = {}', 'local floor, concat = math.floor, table.concat'];
  const js: string[] = ['const M = module.exports;'];
  for (let t = 0; t < 4; t++) {
    const entries = Array.from({ length: 8 }, (_, i) => `k${t}_${i} = ${t * 8 + i}`);
    lua.push(`M.TABLE${t} = { ${entries.join(', ')} }`);
    js.push(`M.TABLE${t} = Object.freeze({ ${entries.map((e) => e.replace(' = ', ': ')).join(', ')} });`);
  }
  for (let i = 0; i < BIG_MODULE_FUNCTIONS; i++) {
    lua.push(
      `function M.helper${i}(s, n)`,
      `  local out = {}`,
      `  n = n or ${(i % 7) + 1}`,
      `  for j = 1, n do`,
      `    if j % 2 == 0 then`,
      `      out[#out + 1] = s:upper() .. "${i}"`,
      `    else`,
      `      out[#out + 1] = s:lower() .. tostring(floor(j * ${i} / 3))`,
      `    end`,
      `  end`,
      `  return concat(out, ",")`,
      `end`,
    );
    js.push(
      `M.helper${i} = function (s, n) {`,
      `  const out = [];`,
      `  n = n ?? ${(i % 7) + 1};`,
      `  for (let j = 1; j <= n; j++) {`,
      `    if (j % 2 === 0) {`,
      `      out.push(s.toUpperCase() + "${i}");`,
      `    } else {`,
      `      out.push(s.toLowerCase() + String(Math.floor((j * ${i}) / 3)));`,
      `    }`,
      `  }`,
      `  return out.join(",");`,
      `};`,
    );
  }
  lua.push('return M');
  return { lua: lua.join('\n') + '\n', js: js.join('\n') + '\n', lines: lua.length };
}

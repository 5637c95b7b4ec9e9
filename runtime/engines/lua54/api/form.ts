/**
 * request.form(), over host/form.ts: waits for the parsed form (the run's coroutine yields, so
 * the call looks synchronous) and pushes it as the table README describes: `fields` and
 * `files` by name (a repeated name keeps its last value) and `parts`, every part in body order
 * (a file part is the same table in `files` and in `parts`). Its own file, as its host side is.
 */
import { isFile, type FormPart } from '../../host.js';
import type { Bindings } from '../run.js';
import type { Ptr } from '../wasm.js';

/** request.form()'s host function (request.ts serves it as a field of `request`). */
export function formFunction(b: Bindings): (L: Ptr) => number {
  const { api } = b;
  const x = api.x;

  /** Pushes one part's table: {name, value} or {name, filename, content_type, data, size}. */
  const pushPart = (L: Ptr, part: FormPart): void => {
    if (isFile(part)) {
      x.lua_createtable(L, 0, 5);
      api.push(L, part.filename);
      api.setField(L, -2, 'filename');
      api.push(L, part.contentType);
      api.setField(L, -2, 'content_type');
      api.push(L, part.data);
      api.setField(L, -2, 'data');
      x.lua_pushinteger(L, BigInt(part.data.length));
      api.setField(L, -2, 'size');
    } else {
      x.lua_createtable(L, 0, 2);
      api.push(L, part.value);
      api.setField(L, -2, 'value');
    }
    api.push(L, part.name);
    api.setField(L, -2, 'name');
  };

  const pushForm = (L: Ptr, value: unknown): number => {
    const parts = value as readonly FormPart[];
    x.lua_createtable(L, 0, 3);
    const form = x.lua_gettop(L);
    x.lua_createtable(L, 0, 0);
    const fields = x.lua_gettop(L);
    x.lua_createtable(L, 0, 0);
    const files = x.lua_gettop(L);
    x.lua_createtable(L, parts.length, 0);
    const list = x.lua_gettop(L);
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      pushPart(L, part);
      api.push(L, part.name);
      if (isFile(part)) x.lua_pushvalue(L, -2);
      else api.push(L, part.value);
      x.lua_rawset(L, isFile(part) ? files : fields);
      x.lua_rawseti(L, list, BigInt(i + 1));
    }
    api.setField(L, form, 'parts');
    api.setField(L, form, 'files');
    api.setField(L, form, 'fields');
    return 1;
  };

  /** request.form(): the body parsed as a form (an empty one for another Content-Type). */
  return (L) => {
    const run = b.run(L);
    return b.wait(L, run, 'request.form()', () => run.host.form(), pushForm);
  };
}

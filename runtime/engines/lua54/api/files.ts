/** File bindings: stat(path) and sendfile(path[, offset, length][, options]). */
import type { FileInfo } from '../../../files/files.js';
import { STAT_FIELDS, type FileFields } from '../../lighty-attributes.js';
import { LUA_TNIL, LUA_TSTRING, LUA_TTABLE } from '../capi.js';
import type { Bindings } from '../run.js';
import type { Ptr } from '../wasm.js';

/** Pushes what stat() found as a table (nil when nothing is there); returns 1. */
export function pushFileTable(b: Bindings, L: Ptr, info: FileInfo | null, names: FileFields): number {
  const { api } = b;
  const x = api.x;
  if (info === null) {
    x.lua_pushnil(L);
    return 1;
  }
  x.lua_createtable(L, 0, 6);
  x.lua_pushboolean(L, info.is_file ? 1 : 0);
  api.setField(L, -2, 'is_file');
  x.lua_pushboolean(L, info.is_dir ? 1 : 0);
  api.setField(L, -2, 'is_dir');
  x.lua_pushinteger(L, BigInt(info.size));
  api.setField(L, -2, names.size);
  x.lua_pushinteger(L, BigInt(info.mtime));
  api.setField(L, -2, names.mtime);
  api.push(L, info.etag);
  api.setField(L, -2, 'etag');
  api.push(L, info.content_type);
  api.setField(L, -2, names.contentType);
  return 1;
}

/** The host functions of this capability, by their names in the sandbox. */
export function bindFiles(b: Bindings): Record<string, (L: Ptr) => number> {
  const { api } = b;
  const x = api.x;

  const pushFileInfo = (L: Ptr, value: unknown): number => pushFileTable(b, L, value as FileInfo | null, STAT_FIELDS);

  const checkText = (L: Ptr, idx: number): string => {
    x.luaL_checklstring(L, idx, 0);
    return api.text(L, idx)!;
  };

  /** A string field of the options table at `idx`, or undefined. */
  function optionField(L: Ptr, idx: number, name: string): string | undefined {
    const t = api.getField(L, idx, name);
    const value = t === LUA_TNIL ? undefined : t === LUA_TSTRING ? api.text(L, -1)! : api.raise(L, `sendfile(): ${name} must be a string`);
    api.pop(L, 1);
    return value;
  }

  return {
    stat(L) {
      const path = checkText(L, 1);
      const run = b.run(L);
      return b.wait(L, run, 'stat()', () => run.host.stat(path), pushFileInfo);
    },
    sendfile(L) {
      const path = checkText(L, 1);
      let offset: number | undefined;
      let length: number | undefined;
      let at = 2;
      if (x.lua_type(L, 2) !== LUA_TTABLE) {
        offset = x.lua_type(L, 2) <= LUA_TNIL ? undefined : Number(x.luaL_checkinteger(L, 2));
        length = x.lua_type(L, 3) <= LUA_TNIL ? undefined : Number(x.luaL_checkinteger(L, 3));
        at = 4;
      }
      let contentType: string | undefined;
      let filename: string | undefined;
      const t = x.lua_type(L, at);
      if (t === LUA_TTABLE) {
        contentType = optionField(L, at, 'content_type');
        filename = optionField(L, at, 'filename');
      } else if (t > LUA_TNIL) {
        return api.raise(L, 'sendfile(path[, offset, length][, options]): options must be a table');
      }
      const run = b.run(L);
      return b.wait(L, run, 'sendfile()', () => run.host.sendfile(path, { offset, length, contentType, filename }), null);
    },
  };
}

/**
 * The Lua engines, chosen by the config's `luaEngine`: `lua54` (the reference Lua 5.4 in
 * WebAssembly, the default) and `fengari` (Lua 5.3 in pure JS, the engine before it, several
 * times slower on script work). Both serve `.lua` and pass the same engine suite and sandbox
 * tests; one serves a worker.
 */
import { LuaEngine } from './lua.js';
import { Lua54Engine } from './lua54/engine.js';
import type { ScriptEngine } from './engine.js';

/** The names `luaEngine` accepts. */
export const LUA_ENGINES = ['fengari', 'lua54'] as const;
export type LuaEngineName = (typeof LUA_ENGINES)[number];

/** Makes the Lua engine `name`. */
export function createLuaEngine(name: LuaEngineName): ScriptEngine {
  return name === 'lua54' ? new Lua54Engine() : new LuaEngine();
}

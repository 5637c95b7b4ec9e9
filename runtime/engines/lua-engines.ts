/**
 * The Lua engines, chosen by the config's `luaEngine`: `lua54` (the reference Lua 5.4 in
 * WebAssembly, the default) and `fengari` (Lua 5.3 in pure JS, the engine before it, several
 * times slower on script work). Both serve `.lua` and pass the same engine suite and sandbox
 * tests; one serves a worker.
 */
import type { ScriptEngine } from './engine.js';

/** The names `luaEngine` accepts. */
export const LUA_ENGINES = ['fengari', 'lua54'] as const;
export type LuaEngineName = (typeof LUA_ENGINES)[number];

/**
 * Makes the Lua engine `name`, importing only its own module: the config names the engines
 * (this file) in every process, and importing fengari alone costs ~29 MB of RSS and ~190 ms.
 */
export async function createLuaEngine(name: LuaEngineName): Promise<ScriptEngine> {
  if (name === 'lua54') return new (await import('./lua54/engine.js')).Lua54Engine();
  return new (await import('./lua.js')).LuaEngine();
}

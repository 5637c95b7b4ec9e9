/**
 * response.cookie(), the sandbox side only: it runs inside QuickJS, with no host primitive.
 * The `cookie` package's own file and host/cookies.ts's cookieLine() are embedded here as
 * source text, so the JS engine checks and writes a Set-Cookie line with the very code the Lua
 * engines run on the host, and a cookie costs no call out of the sandbox (~5-10 us each): the
 * line joins the buffered head changes (api/output.ts `addHeader`) and reaches the host with
 * them, in the script's order. request.cookies is a record of the request view (api/request.ts).
 */
import { cookieLibrarySource, cookieLine } from '../../host.js';

/** The host primitives of this capability: none. */
export const COOKIES_PRIMITIVES = [] as const;

/** The prelude part (see ../prelude.ts for the names in scope): `setCookie`, response.cookie's body. */
export const COOKIES_PRELUDE = `
  // The cookie package (CommonJS), run once per context with an exports object of its own.
  const cookieLib = (function (exports) {
${cookieLibrarySource()}
    ;
    return exports;
  })({});
  const cookieLine = ${cookieLine.toString()};
  const setCookie = (name, value, options) => addHeader('Set-Cookie', cookieLine(cookieLib.stringifySetCookie, name, value, options));`;

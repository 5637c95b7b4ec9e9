/**
 * request.form(), both sides of the boundary: the host primitive, a promise of the parsed form
 * (host/form.ts) as JSON, and the prelude part that builds the script's object from it:
 * `fields` and `files` by name (a repeated name keeps its last value) and `parts`, every part in
 * body order (a file is the same object in `files` and in `parts`). A file's bytes arrive as a
 * string decoded as UTF-8, as request.body() gives the body: binary bytes that are not UTF-8
 * become U+FFFD, and `size` keeps the byte count.
 */
import { isFile } from '../../host.js';
import type { Bindings, Bridge } from './binding.js';

/** The host primitives of this capability. */
export const FORM_PRIMITIVES = ['form'] as const;

/** The prelude part (see ../prelude.ts for the names in scope): `formOf`, request.form()'s object from the host's JSON. */
export const FORM_PRELUDE = `
  // [[name, value] or [name, filename, content type, data, size], ...] -> { fields, files, parts }
  const formOf = (json) => {
    const fields = create(null), files = create(null), parts = [];
    for (const p of parse(json)) {
      if (p.length === 2) {
        fields[p[0]] = p[1];
        parts.push({ name: p[0], value: p[1] });
      } else {
        const file = { name: p[0], filename: p[1], content_type: p[2], data: p[3], size: p[4] };
        files[p[0]] = file;
        parts.push(file);
      }
    }
    return { fields, files, parts };
  };`;

/** The host side of request.form(). */
export function formBindings(vm: Bridge): Bindings<(typeof FORM_PRIMITIVES)[number]> {
  return {
    form: (run) =>
      vm.hostCall(run, run.host.form(), (parts) =>
        vm.newString(JSON.stringify(parts.map((p) => (isFile(p) ? [p.name, p.filename, p.contentType, p.data.toString('utf8'), p.data.length] : [p.name, p.value])))),
      ),
  };
}

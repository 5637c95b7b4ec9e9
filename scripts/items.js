// A JSON API with a module (lib/api.js): GET /items.js lists, ?id=N shows one, POST adds one.
const api = require('api');
const items = [
  { id: 1, name: 'lodestone' },
  { id: 2, name: 'magnet' },
];

if (!api.allow('GET', 'POST')) return api.fail(405, 'use GET or POST');
if (request.method === 'POST') {
  const [item, err] = await api.body();
  if (!item) return api.fail(400, err);
  if (typeof item.name !== 'string' || item.name === '') return api.fail(422, 'name is required');
  return api.reply({ id: items.length + 1, name: item.name }, 201);
}
const id = Number(request.query.id);
if (!request.query.id) return api.reply(items);
const item = items.find((i) => i.id === id);
return item ? api.reply(item) : api.fail(404, `no item ${request.query.id}`);

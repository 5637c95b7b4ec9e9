// A small JSON API: GET /api.js?name=x greets, POST echoes the body back.
response.headers['Content-Type'] = 'application/json';
if (request.method === 'POST') {
  const body = await request.body();
  write(JSON.stringify({ received: body }));
  return 201;
}
const name = request.query.name;
if (!name) {
  write(JSON.stringify({ error: 'name is required' }));
  return 400;
}
write(JSON.stringify({ greeting: `Hello, ${name}`, method: request.method }));

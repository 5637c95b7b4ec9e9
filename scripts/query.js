// Echo the decoded query arguments, one "name=value" per line, sorted by name.
response.headers['Content-Type'] = 'text/plain; charset=utf-8';
for (const name of Object.keys(request.query).sort()) {
  print(`${name}=${request.query[name]}`);
}

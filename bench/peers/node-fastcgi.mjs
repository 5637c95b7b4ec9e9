/*
 * The node-fastcgi peer of the benchmark: the hello world of the Node library node-fastcgi
 * (https://github.com/fbbdev/node-fastcgi, the bench package's one dependency), answering every
 * request with 200 text/plain "123". node-fastcgi honours FCGI_KEEP_CONN (lib/server.js keeps
 * the socket open when the flag is set), so it runs in both of nginx's modes.
 *
 *   node node-fastcgi.mjs PORT        # listens on 127.0.0.1:PORT
 */
import fcgi from 'node-fastcgi';

const port = Number(process.argv[2]);
fcgi
  .createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('123');
  })
  .listen(port, '127.0.0.1');

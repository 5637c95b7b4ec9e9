/**
 * The server's list of open connections (runtime/fastcgi/server/connection.ts, ConnectionList):
 * linked through the connections, so each add and delete must keep the links, the size and the
 * walk right, including a delete of the connection the walk is at (the sweep closes some).
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { ConnectionList, type Connection } from '../../runtime/fastcgi/server/connection.js';

/** Stand-ins with only the list's links: the list touches nothing else of a connection. */
function conns(n: number): Connection[] {
  return Array.from({ length: n }, (_, id) => ({ id, listPrev: null, listNext: null, listed: false }) as unknown as Connection);
}

const ids = (list: ConnectionList): number[] => [...list].map((c) => c.id);

test('ConnectionList: add, delete at the head, middle and tail, twice, and a walk that deletes as it goes', () => {
  const list = new ConnectionList();
  const [a, b, c, d] = conns(4) as [Connection, Connection, Connection, Connection];
  for (const x of [a, b, c, d]) list.add(x);
  assert.equal(list.size, 4);
  assert.deepEqual(ids(list), [3, 2, 1, 0]);
  list.delete(b);
  list.delete(b); // a second delete of the same connection changes nothing
  assert.equal(list.size, 3);
  assert.deepEqual(ids(list), [3, 2, 0]);
  list.delete(d);
  assert.deepEqual(ids(list), [2, 0]);
  list.delete(a);
  assert.deepEqual(ids(list), [2]);
  list.add(a);
  assert.deepEqual(ids(list), [0, 2]);
  const seen: number[] = [];
  for (const x of list) {
    seen.push(x.id);
    list.delete(x);
  }
  assert.deepEqual(seen, [0, 2]);
  assert.equal(list.size, 0);
  assert.deepEqual(ids(list), []);
  assert.equal(a.listNext, null);
  assert.equal(c.listPrev, null);
});

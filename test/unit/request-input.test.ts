/**
 * The request's input streams (runtime/fastcgi/server/request.ts: Input) read whole with
 * bytes() before their end record: no Readable is made for it, the chunks stay queued, the
 * connection is never left paused under a reader that wants everything, and a failure or an
 * answered request settles the wait.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { INPUT_HIGH_WATER, Input, type FlowControl } from '../../runtime/fastcgi/server/request.js';

/** A FlowControl that records what the input asked of its connection. */
function recordingFlow(): FlowControl & { calls: string[] } {
  const calls: string[] = [];
  return { calls, pauseFor: () => void calls.push('pause'), resumeFor: () => void calls.push('resume') };
}

/** A record's content as the connection hands it over: a view of a larger socket read. */
function record(text: string): Buffer {
  const read = Buffer.alloc(text.length * 8);
  read.write(text, 8);
  return read.subarray(8, 8 + text.length);
}

test('bytes() before the end record: every chunk, in order, when the end arrives', async () => {
  const input = new Input(recordingFlow());
  input.push(record('ab'));
  const whole = input.bytes();
  input.push(Buffer.alloc(20_000, 'c'));
  input.push(record('de'));
  let settled = false;
  void whole.then(() => (settled = true));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(settled, false, 'still waiting for the end record');
  input.end();
  const all = await whole;
  assert.equal(all.toString(), `ab${'c'.repeat(20_000)}de`);
  assert.equal((await input.bytes()).length, 0, 'a second read gets nothing');
});

test('bytes() resumes a connection the queue paused, and takes the rest without pausing it again', async () => {
  const flow = recordingFlow();
  const input = new Input(flow);
  input.push(Buffer.alloc(INPUT_HIGH_WATER + 1, 'x'));
  assert.deepEqual(flow.calls, ['pause']);
  const whole = input.bytes();
  assert.deepEqual(flow.calls, ['pause', 'resume']);
  input.push(Buffer.alloc(INPUT_HIGH_WATER, 'y'));
  assert.deepEqual(flow.calls, ['pause', 'resume'], 'no pause while bytes() waits');
  input.end();
  assert.equal((await whole).length, 2 * INPUT_HIGH_WATER + 1);
});

test('bytes() twice while waiting: one promise', () => {
  const input = new Input(recordingFlow());
  assert.equal(input.bytes(), input.bytes());
  input.end();
});

test('a waiting bytes() rejects when the request is aborted, and when it is answered first', async () => {
  const aborted = new Input(recordingFlow());
  const a = aborted.bytes();
  aborted.fail(new Error('request aborted'));
  await assert.rejects(a, /request aborted/);

  const answered = new Input(recordingFlow());
  const b = answered.bytes();
  answered.discard();
  await assert.rejects(b, /request already answered/);
});

test('the stream asked for while bytes() waits: bytes() reads it, and still gets all of the body', async () => {
  const input = new Input(recordingFlow());
  input.push(record('one '));
  const whole = input.bytes();
  void input.readable;
  input.push(record('two'));
  input.end();
  assert.equal((await whole).toString(), 'one two');
});

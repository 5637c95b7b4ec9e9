/**
 * The benchmark's pure parts: the numbers it reports (medians, per-round ratios, noise flags),
 * the pages it writes, and the configurations and requests it sends to real servers.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import test from 'node:test';
import { FCGI_BEGIN_REQUEST, FCGI_KEEP_CONN, FCGI_PARAMS, FCGI_STDIN } from '../../runtime/fastcgi/constants.js';
import { decodePairs } from '../../runtime/fastcgi/pairs.js';
import { RecordParser } from '../../runtime/fastcgi/records.js';
import { noiseOf, type Run, type Target } from '../lib/harness.js';
import { repoRoot } from '../../test/shared/repo.js';
import { lighttpdConfig } from '../lib/lighttpd.js';
import { nginxConfig } from '../lib/nginx.js';
import type { Managed } from '../lib/procs.js';
import { chartBars, cpuPerRequestUs, median, ratioCell, roundRatios, summaryTable, wrkReport } from '../lib/report.js';
import { installHint, missingOf } from '../lib/prereq.js';
import { resultsPage, resultsPlace } from '../lib/results.js';
import { keptRequest } from '../scenarios/idle.js';
import { selectedPeers } from '../scenarios/hello.js';
import { reading, type Config as StatConfig } from '../scenarios/stat-accel.js';
import { SettingsError } from '../lib/settings.js';
import { parseWrk } from '../lib/wrk.js';

const proc = (pid: number): Managed => ({ name: `p${pid}`, child: null as never, pid, logFile: '', exited: Promise.resolve(), exitInfo: () => null });
const target = (id: string, pid = 10): Target => ({ id, label: id, mode: 'FastCGI keep-alive', front: 'nginx', url: '', frontProc: proc(1), backendProc: proc(pid) });
const run = (round: number, t: Target, rps: number): Run => ({
  round,
  target: t,
  wrk: { requests: rps, rps, p50: 1, p99: 2, socketErrors: { connect: 0, read: 0, write: 0, timeout: 0 }, non2xx: 0, raw: '' },
  frontCpu: 0,
  backendCpu: 0,
  wrkCpu: 0,
  otherCpu0: 0,
  otherCpu1: 0,
  steal: 0,
  noise: [],
  problems: [],
});

test('wrkReport: the sections in order, lines after the summary where asked, the chart, and valid only without problems', () => {
  const a = target('a');
  const b = target('b', 11);
  const runs = [run(1, a, 2000), run(1, b, 1000)];
  const m = { date: '2026-12-07T10:00:00.000Z', cpuModel: 'CPU X', cpus: 2, node: 'v20', kernel: '6', loadavg: [0, 0, 0] };
  const settings = { seconds: 10, rounds: 1, connections: 16, warmup: 2, noiseThreshold: 10 };
  const report = wrkReport({
    scenario: 'demo',
    heading: 'demo: a title',
    machine: m,
    settings,
    notes: ['a note'],
    targets: [a, b],
    runs,
    baselines: [{ id: 'b', heading: '/ b' }],
    rss: new Map(),
    per: 'peer',
    chartTitle: 'demo chart',
    onOneCore: 'servers',
    afterSummary: ['Between the tables', ''],
  });
  const md = report.markdown;
  assert.ok(md.startsWith('# demo: a title\n\n'), md.slice(0, 40));
  assert.ok(md.includes('\n![req/s per peer](demo-latest.svg)\n'));
  const summary = md.indexOf('| Peer | Reached as |');
  const between = md.indexOf('\nBetween the tables\n');
  const perRun = md.indexOf('| Round | Peer |');
  assert.ok(summary > 0 && summary < between && between < perRun, `order: ${summary} ${between} ${perRun}`);
  assert.ok(md.includes('a note'));
  assert.equal(report.valid, true);
  assert.match(report.svg ?? '', /demo chart/);
  assert.match(report.svg ?? '', /2026-12-07, CPU X, servers on one core/);
  const bad = wrkReport({
    scenario: 'demo',
    heading: 'h',
    machine: m,
    settings,
    notes: [],
    targets: [a],
    runs: [{ ...run(1, a, 5), problems: ['wrk errors'] }],
    baselines: [],
    rss: new Map(),
    per: 'peer',
    chartTitle: 't',
    onOneCore: 'server',
  });
  assert.equal(bad.valid, false);
});

test('median: odd, even, unsorted, empty', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
});

test('ratios are taken round by round, not as a ratio of medians', () => {
  const a = target('a');
  const b = target('b', 11);
  // Round 2 is slower for both (drift): per round the ratio is 2 both times.
  const runs = [run(1, a, 2000), run(1, b, 1000), run(2, a, 1000), run(2, b, 500), run(3, a, 3000)];
  assert.deepEqual(roundRatios(runs, 'a', 'b'), [2, 2]);
  assert.equal(ratioCell([2, 2]), '2.00 (2.00–2.00)');
  assert.equal(ratioCell([1.5]), '1.50');
  assert.equal(ratioCell([]), '—');
  // The table shows the per-round median, and "1" for the baseline's own row.
  const rows = summaryTable([a, b], runs, [{ id: 'b', heading: '/ b' }]);
  assert.match(rows[2]!, /^\| a \|.*\| 2\.00 \(2\.00–2\.00\) \|$/);
  assert.match(rows[3]!, /^\| b \|.*\| 1 \|$/);
  // A column only for the rows it applies to.
  const limited = summaryTable([a, b], runs, [{ id: 'b', heading: '/ b', appliesTo: (t) => t.id === 'b' }]);
  assert.match(limited[2]!, /\| — \|$/);
});

test('server CPU per request: the backend share over its rate, the front end without a backend', () => {
  const withBackend = { ...run(1, target('a'), 20_000), frontCpu: 45, backendCpu: 50 };
  assert.equal(cpuPerRequestUs(withBackend), 25);
  const ceiling: Target = { ...target('c'), backendProc: undefined };
  assert.equal(cpuPerRequestUs({ ...run(1, ceiling, 100_000), frontCpu: 99, backendCpu: NaN }), 9.9);
  assert.ok(Number.isNaN(cpuPerRequestUs({ ...withBackend, backendCpu: NaN })), 'unsampled run');
  assert.ok(Number.isNaN(cpuPerRequestUs({ ...withBackend, wrk: { ...withBackend.wrk, rps: 0 } })), 'no requests');
  // In the summary: the median over rounds, between p99 and RSS.
  const a = target('a');
  const runs = [1, 2, 3].map((r) => ({ ...run(r, a, 10_000), backendCpu: [40, 50, 90][r - 1]! }));
  const [head, , row] = summaryTable([a], runs, []);
  assert.match(head!, /\| p99 \| server CPU \/ req \| server RSS \|/);
  assert.match(row!, /\| 50 µs \| — \|$/);
});

test('chart bars: median with min–max whiskers, Lodestone highlighted, front end as the group', () => {
  const a = { ...target('a'), lodestone: true };
  const bars = chartBars([a], [run(1, a, 900), run(2, a, 1000), run(3, a, 1300)]);
  assert.deepEqual(bars, [{ label: 'a (nginx, FastCGI keep-alive)', median: 1000, min: 900, max: 1300, group: 'nginx', highlight: true }]);
});

test('noise: other load over the threshold on either CPU or steal flags a run; a tracer on CPU 1 is not noise', () => {
  assert.deepEqual(noiseOf({ otherCpu0: 3, otherCpu1: 9, steal: 0 }, 10), []);
  assert.deepEqual(noiseOf({ otherCpu0: 25, otherCpu1: 40, steal: 12 }, 10), ['CPU0 25% other load', 'CPU1 40% other load', '12% steal']);
  assert.deepEqual(noiseOf({ otherCpu0: 0, otherCpu1: 40, steal: 0 }, 10, false, true), []);
  assert.deepEqual(noiseOf({ otherCpu0: NaN, otherCpu1: NaN, steal: NaN }, 10, true), ['no CPU sample (run ended early?)']);
});

test('RESULTS.md: sections in suite order, headings one level down, chart links into results/', () => {
  const page = resultsPage(['hello', 'idle', 'micro'], (name) =>
    name === 'idle' ? null : `# ${name} title\n\n![chart](${name}-latest.svg)\n\n## sub\n`,
  );
  assert.match(page, /^# Benchmark results\n/);
  assert.ok(page.indexOf('## hello title') < page.indexOf('## micro title'));
  assert.ok(!page.includes('idle title'));
  assert.ok(page.includes('![chart](results/hello-latest.svg)'));
  assert.ok(page.includes('### sub'));
  assert.ok(page.includes('Scenarios: hello, micro.'));
  assert.ok(!page.includes('Smoke run'));
  // A smoke run's page sits beside its reports and says what it is.
  const smoke = resultsPage(['hello'], (name) => `# ${name}\n\n![chart](${name}-latest.svg)\n`, '', true);
  assert.ok(smoke.includes('![chart](hello-latest.svg)'));
  assert.match(smoke, /\*\*Smoke run \(BENCH_QUICK=1\)\*\*/);
});

test('results place: a smoke run writes to bench/results/quick/, never over the results', () => {
  const real = resultsPlace(false, null);
  const quick = resultsPlace(true, null);
  assert.equal(path.relative(repoRoot, real.page), 'bench/RESULTS.md');
  assert.equal(path.relative(repoRoot, real.dir), 'bench/results');
  assert.equal(path.relative(repoRoot, quick.dir), 'bench/results/quick');
  assert.equal(path.relative(repoRoot, quick.page), 'bench/results/quick/RESULTS.md');
  assert.ok(quick.smoke && !real.smoke);
});

test('results place: a run under BENCH_NODE writes beside the results, in a folder of its Node major', () => {
  const node24 = resultsPlace(false, '24');
  assert.equal(path.relative(repoRoot, node24.dir), 'bench/results/node24');
  assert.equal(path.relative(repoRoot, node24.page), 'bench/results/node24/RESULTS.md');
  assert.ok(!node24.smoke);
  // A smoke run stays a smoke run on any Node.
  assert.equal(path.relative(repoRoot, resultsPlace(true, '24').dir), 'bench/results/quick');
});

test('BENCH_PEERS: default leaves the diagnostic out, order is the report order, unknown names are an error', () => {
  assert.ok(!selectedPeers(undefined).includes('lodestone-diagnostic'));
  assert.ok(selectedPeers('').includes('mod_magnet'));
  assert.deepEqual(selectedPeers('php-fpm, lodestone-lua'), ['lodestone-lua', 'php-fpm']);
  assert.throws(() => selectedPeers('lodestone-lua,apache'), SettingsError);
});

test('nginx config: the ceiling site answers itself, keep-alive sites get an upstream pool', () => {
  const conf = nginxConfig('/tmp/x', [
    { listen: 8001, backend: null, returnBody: '123', keepalive: null, name: 'ceiling' },
    { listen: 8002, backend: 9002, keepalive: 16, name: 'kept' },
    { listen: 8003, backend: 9003, keepalive: null, name: 'closed' },
  ], false);
  assert.match(conf, /listen 127\.0\.0\.1:8001;\n\s+location \/ \{\n\s+default_type text\/plain;\n\s+return 200 "123";/);
  assert.match(conf, /upstream kept \{\n\s+server 127\.0\.0\.1:9002;\n\s+keepalive 16;/);
  assert.match(conf, /fastcgi_pass kept;\n\s+fastcgi_keep_conn on;/);
  assert.match(conf, /fastcgi_pass 127\.0\.0\.1:9003;/);
  assert.ok(!conf.includes('upstream ceiling') && !conf.includes('upstream closed'));
});

test('lighttpd config: mod_magnet in-core, mod_fastcgi over TCP or a socket', () => {
  const magnet = lighttpdConfig('/tmp/x', { name: 'm', port: 8001, docRoot: '/srv', handler: { kind: 'magnet', script: '/b/hello-magnet.lua' } });
  assert.match(magnet, /server\.modules \+= \( "mod_magnet" \)\nmagnet\.attract-raw-url-to = \( "\/b\/hello-magnet\.lua" \)/);
  const tcp = lighttpdConfig('/tmp/x', { name: 'f', port: 8002, docRoot: '/srv', handler: { kind: 'fastcgi', port: 9000 } });
  assert.match(tcp, /"host" => "127\.0\.0\.1", "port" => 9000,\n\s+"check-local" => "disable",\n\)\)\)/);
  const unix = lighttpdConfig('/tmp/x', { name: 's', port: 8003, docRoot: '/srv', handler: { kind: 'fastcgi', socket: '/tmp/x/s.sock', xSendfile: true } });
  assert.match(unix, /"socket" => "\/tmp\/x\/s\.sock",[\s\S]*"x-sendfile" => "enable"/);
});

test('the idle scenario\'s request is a valid nginx-style GET with FCGI_KEEP_CONN, as our own parser reads it', () => {
  const records: Array<{ type: number; id: number; content: Buffer }> = [];
  const parser = new RecordParser((type, id, buf, start, end) => records.push({ type, id, content: Buffer.from(buf.subarray(start, end)) }));
  assert.equal(parser.push(keptRequest('/srv/hello.lua', '/srv')), null);
  assert.deepEqual(records.map((r) => r.type), [FCGI_BEGIN_REQUEST, FCGI_PARAMS, FCGI_PARAMS, FCGI_STDIN]);
  assert.ok(records.every((r) => r.id === 1));
  assert.equal(records[0]!.content[2]! & FCGI_KEEP_CONN, FCGI_KEEP_CONN);
  const params: Record<string, string> = {};
  assert.equal(decodePairs(records[1]!.content, 100, params), null);
  assert.equal(params.SCRIPT_FILENAME, '/srv/hello.lua');
  assert.equal(params.REQUEST_METHOD, 'GET');
  assert.equal(records[2]!.content.length + records[3]!.content.length, 0);
});

test('wrk report parsing: rate, latency percentiles in ms, errors', () => {
  const r = parseWrk(`Running 2s test @ http://127.0.0.1:1/
  1 threads and 16 connections
  Latency Distribution
     50%  812.00us
     75%    1.00ms
     90%    1.50ms
     99%    2.50s
  36000 requests in 2.00s, 5.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
Requests/sec:  18000.50
`);
  assert.equal(r.rps, 18000.5);
  assert.equal(r.p50, 0.812);
  assert.equal(r.p99, 2500);
  assert.deepEqual(r.socketErrors, { connect: 0, read: 3, write: 0, timeout: 1 });
});

test('missing programs name their Debian packages, and the bench package its npm step', () => {
  const none = { nginx: null, wrk: '/usr/bin/wrk', gcc: null, taskset: '/usr/bin/taskset', phpFpm: null, lighttpd: null, strace: null };
  const missing = missingOf(['nginx', 'wrk', 'taskset', 'php-fpm', 'lighttpd', 'strace', 'node-fastcgi'], none, '/nonexistent');
  assert.deepEqual(missing.map((m) => m.what), ['nginx', 'php-fpm', 'lighttpd', 'strace', 'node-fastcgi']);
  assert.equal(installHint(missing), 'apt-get install -y nginx php-fpm lighttpd strace && npm ci --prefix bench');
  assert.deepEqual(missingOf(['wrk', 'taskset'], none, '/nonexistent'), []);
});

test('stat-accel reading: the top row is limited by the core only when the core was busy or the control was no faster', () => {
  const cfg = (id: string, threads: number | null, traced: boolean): StatConfig => ({ id, label: id, threads, traced, port: 0 });
  const one = cfg('1 thread', 1, true);
  const twenty = cfg('20 threads', 20, true);
  const control = cfg('untraced', 20, false);
  const runsOf = (rps: Record<string, number>, cpu: number) => (c: StatConfig): Run[] => [
    { ...run(1, target(c.id), rps[c.id] ?? 0), frontCpu: cpu / 4, backendCpu: (3 * cpu) / 4 },
  ];
  const says = (rps: Record<string, number>, cpu: number): string => reading([one, twenty, control], runsOf(rps, cpu), rps['1 thread']!, 5, 4000).join('\n');
  // The stats limit: the control is much faster and the core had room.
  const stats = says({ '1 thread': 186, '20 threads': 3140, untraced: 7204 }, 60);
  assert.match(stats, /\*\*16\.9x\*\*.*met/);
  assert.match(stats, /server core is not the limit here: the delayed stats are \(79% of the 4,000 stats\/s/);
  // The core limits: the control is barely faster, or the core was full.
  assert.match(says({ '1 thread': 186, '20 threads': 2976, untraced: 3150 }, 70), /the server core, not the stats, is the limit/);
  assert.match(says({ '1 thread': 186, '20 threads': 2976, untraced: 6000 }, 97), /the server core, not the stats, is the limit/);
  // A control slower than the delayed run bounds nothing.
  assert.match(says({ '1 thread': 186, '20 threads': 3140, untraced: 2000 }, 60), /does not bound 20 threads/);
  // 20 over 1 below 8x is called out.
  assert.match(says({ '1 thread': 500, '20 threads': 3140, untraced: 7204 }, 60), /NOT met/);
  // With the peer (lighttpd alone on the slowed disk): the seed's comparison comes first.
  const peer = cfg('static-slow', null, true);
  const withPeer = reading([peer, one, twenty, control], runsOf({ 'static-slow': 186, '1 thread': 186, '20 threads': 3140, untraced: 7204 }, 60), 186, 5, 4000);
  assert.match(withPeer[0]!, /^- 20 threads \/ static-slow: \*\*16\.9x\*\*, the comparison fcgi-stat-accel's page makes .* 93% of the 200 files\/s/);
  assert.match(withPeer[1]!, /^- 20 threads \/ 1 thread: \*\*16\.9x\*\*/, 'the peer is not the thread-count base');
});

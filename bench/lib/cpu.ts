/**
 * CPU accounting from /proc, to tell whether a run had the machine to itself. The benchmark pins
 * nginx and the backend to CPU 0 and wrk to CPU 1, so for each CPU "busy time in /proc/stat
 * minus the time our processes pinned there used" is somebody else's load. /proc/stat also
 * catches short-lived processes (a test suite spawning compilers) that a /proc/PID walk misses.
 */
import fs from 'node:fs';

/** Cumulative clock ticks of one CPU line of /proc/stat. */
interface CpuTicks {
  busy: number;
  steal: number;
  total: number;
}

/** A point-in-time reading: per-CPU ticks and the ticks used by each watched process group. */
export interface Sample {
  cpus: Map<string, CpuTicks>;
  groups: Map<number, number>;
}

/** What happened between two samples, each in percent of one CPU. */
export interface Usage {
  /** Per watched process group (pgid): its CPU use. */
  groups: Map<number, number>;
  /** Busy time on CPU 0 / CPU 1 not used by the groups pinned there. */
  otherCpu0: number;
  otherCpu1: number;
  /** Time the hypervisor gave to other guests, averaged over both CPUs. */
  steal: number;
}

function readCpus(): Map<string, CpuTicks> {
  const out = new Map<string, CpuTicks>();
  for (const line of fs.readFileSync('/proc/stat', 'utf8').split('\n')) {
    if (!line.startsWith('cpu')) continue;
    const [name, ...rest] = line.trim().split(/\s+/);
    // user nice system idle iowait irq softirq steal (guest time is already inside user)
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = rest.map(Number);
    const busy = user + nice + system + irq + softirq;
    out.set(name!, { busy, steal, total: busy + idle + iowait + steal });
  }
  return out;
}

/** utime + stime (clock ticks) summed per process group, over the live processes in /proc. */
function readGroups(pgids: readonly number[]): Map<number, number> {
  const out = new Map<number, number>(pgids.map((g) => [g, 0]));
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    // The command name is in parentheses and may itself contain spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const pgrp = Number(fields[2]);
    const ticks = out.get(pgrp);
    if (ticks === undefined) continue;
    out.set(pgrp, ticks + Number(fields[11]) + Number(fields[12]));
  }
  return out;
}

export function sample(pgids: readonly number[]): Sample {
  return { cpus: readCpus(), groups: readGroups(pgids) };
}

/**
 * Usage between `a` and `b`. `cpu0Groups` and `cpu1Groups` name the groups pinned to each CPU,
 * whose time is subtracted from that CPU's busy time to leave the load of everything else.
 */
export function usage(a: Sample, b: Sample, cpu0Groups: readonly number[], cpu1Groups: readonly number[]): Usage {
  const delta = (name: string): CpuTicks => {
    const x = a.cpus.get(name);
    const y = b.cpus.get(name);
    if (!x || !y) return { busy: 0, steal: 0, total: 0 };
    return { busy: y.busy - x.busy, steal: y.steal - x.steal, total: y.total - x.total };
  };
  const cpu0 = delta('cpu0');
  const cpu1 = delta('cpu1');
  const all = delta('cpu');
  // Ticks of one CPU over the window: the unit every percentage below is relative to.
  const perCpu = Math.max(1, cpu0.total);
  const groups = new Map<number, number>();
  for (const [pgid, ticks] of b.groups) groups.set(pgid, ((ticks - (a.groups.get(pgid) ?? 0)) / perCpu) * 100);
  const sum = (list: readonly number[]): number => list.reduce((s, g) => s + (groups.get(g) ?? 0), 0);
  const pct = (ticks: number, total: number): number => (total > 0 ? (ticks / total) * 100 : 0);
  return {
    groups,
    // Tick sampling makes the difference wobble by a percent or so; never report negative load.
    otherCpu0: Math.max(0, pct(cpu0.busy, cpu0.total) - sum(cpu0Groups)),
    otherCpu1: Math.max(0, pct(cpu1.busy, cpu1.total) - sum(cpu1Groups)),
    steal: pct(all.steal, all.total),
  };
}

/** Other load on the machine over `ms`, before we start anything: percent of one CPU, all CPUs. */
export async function idleLoad(ms: number): Promise<number> {
  const a = readCpus().get('cpu');
  await new Promise((resolve) => setTimeout(resolve, ms));
  const b = readCpus().get('cpu');
  if (!a || !b) return 0;
  const cpus = Math.max(1, [...readCpus().keys()].length - 1);
  return b.total > a.total ? ((b.busy - a.busy) / (b.total - a.total)) * 100 * cpus : 0;
}

/** VmRSS of one process in KiB, or null when it is gone. */
export function rssKiB(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** One process's memory, KiB: VmRSS, and its private pages (Private_Clean + Private_Dirty of smaps_rollup). */
export interface ProcessMemory {
  rssKiB: number;
  privateKiB: number;
}

/** Reads one process's memory from /proc; throws when the process is gone or not ours to read. */
export function processMemory(pid: number): ProcessMemory {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kib = (text: string, field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return { rssKiB: kib(status, 'VmRSS'), privateKiB: kib(rollup, 'Private_Clean') + kib(rollup, 'Private_Dirty') };
}

/** Sum of VmRSS (KiB) over a process group's processes (shared pages count once per process). */
export function groupRssKiB(pgid: number): { kib: number; processes: number } {
  let kib = 0;
  let processes = 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]) !== pgid) continue;
    } catch {
      continue;
    }
    const rss = rssKiB(Number(entry));
    if (rss !== null) {
      kib += rss;
      processes++;
    }
  }
  return { kib, processes };
}

/**
 * Running as an unprivileged user, as php-fpm's pools and nginx's workers do: the process
 * started as root binds the socket and prepares the files workers write, then every process that
 * runs scripts gives up root for good (setgroups, setgid, setuid, in that order: after setuid
 * the other two are no longer allowed) before it loads one.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { LodestoneError } from '../errors.js';

/** The user and group the script-running processes become. */
export interface RunAs {
  /** The name as configured (or the number, when the user has no passwd entry). */
  readonly user: string;
  readonly uid: number;
  readonly group: string;
  readonly gid: number;
  /** True when the user has a passwd entry: its supplementary groups come from initgroups(3). */
  readonly known: boolean;
}

interface Entry {
  readonly name: string;
  readonly id: number;
  /** passwd: the primary group id; group: unused. */
  readonly gid: number;
}

/**
 * Looks a name or number up in passwd or group: the files first (no process spawned), then
 * `getent` for NSS sources (LDAP, systemd's dynamic users). Null when neither knows it.
 */
function lookup(db: 'passwd' | 'group', key: string): Entry | null {
  const numeric = /^\d+$/.test(key);
  const match = (line: string): Entry | null => {
    const f = line.split(':');
    if (f.length < 4) return null;
    if (numeric ? f[2] !== key : f[0] !== key) return null;
    return { name: f[0]!, id: Number(f[2]), gid: db === 'passwd' ? Number(f[3]) : Number(f[2]) };
  };
  try {
    for (const line of fs.readFileSync(`/etc/${db}`, 'utf8').split('\n')) {
      const e = match(line);
      if (e) return e;
    }
  } catch {
    // No /etc/passwd (a scratch container): getent may still know, else the number stands.
  }
  try {
    return match(execFileSync('getent', [db, key], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  } catch {
    return null;
  }
}

/**
 * A name or number from the config, looked up: its entry (null for a number the database does
 * not know, allowed: containers run arbitrary ids) and its id. An unknown name is the field's error.
 */
function known(db: 'passwd' | 'group', key: string, field: string): { entry: Entry | null; id: number } {
  const entry = lookup(db, key);
  if (entry === null && !/^\d+$/.test(key)) {
    throw new LodestoneError('LS_CONFIG_INVALID', `${field}: no such ${db === 'passwd' ? 'user' : 'group'} ${JSON.stringify(key)}`);
  }
  return { entry, id: entry?.id ?? Number(key) };
}

/**
 * Resolves `user` / `group` from the config (names or numbers) to ids; `field` names the flag or
 * field in the error. The group defaults to the user's primary group. A number without a passwd
 * entry is allowed (containers run arbitrary uids) but then needs a group.
 */
export function resolveRunAs(user: string, group: string | null, fields: { user: string; group: string }): RunAs {
  if (user === '') throw new LodestoneError('LS_CONFIG_INVALID', `${fields.user}: must be a user name or number`);
  const { entry: pw, id: uid } = known('passwd', user, fields.user);
  let gid: number;
  let groupName: string;
  if (group !== null) {
    const gr = known('group', group, fields.group);
    gid = gr.id;
    groupName = gr.entry?.name ?? group;
  } else if (pw !== null) {
    gid = pw.gid;
    groupName = lookup('group', String(gid))?.name ?? String(gid);
  } else {
    throw new LodestoneError('LS_CONFIG_INVALID', `${fields.group}: needed with a numeric user that has no passwd entry (${user})`);
  }
  if (uid > 0xfffffffe || gid > 0xfffffffe) throw new LodestoneError('LS_CONFIG_INVALID', `${fields.user}: id out of range`);
  return Object.freeze({ user: pw?.name ?? user, uid, group: groupName, gid, known: pw !== null });
}

/** True when this process can switch users (it runs as root). */
export function isRoot(): boolean {
  return process.geteuid?.() === 0;
}

/**
 * Gives up root for `runAs`, for good: supplementary groups, then the group, then the user
 * (as root, setuid(2) sets the real, effective and saved ids alike, so there is no way back).
 * Throws LS_CONFIG_INVALID when any step fails or root can be regained.
 */
export function dropPrivileges(runAs: RunAs): void {
  try {
    // initgroups(3) reads the user's groups from the group database, as php-fpm does; a user
    // without a passwd entry gets only its group.
    // (process.initgroups is in every Node we support; @types/node leaves it out.)
    const initgroups = (process as unknown as { initgroups: (user: string, group: number) => void }).initgroups;
    if (runAs.known) initgroups(runAs.user, runAs.gid);
    else process.setgroups!([runAs.gid]);
    process.setgid!(runAs.gid);
    process.setuid!(runAs.uid);
  } catch (err) {
    throw new LodestoneError('LS_CONFIG_INVALID', `user: cannot switch to ${runAs.user}:${runAs.group}: ${(err as Error).message}`);
  }
  let regained = false;
  if (runAs.uid !== 0) {
    try {
      process.setuid!(0);
      regained = true;
    } catch {
      // EPERM: as it must be.
    }
  }
  if (regained || process.getuid!() !== runAs.uid || process.geteuid!() !== runAs.uid || process.getgid!() !== runAs.gid || process.getegid!() !== runAs.gid) {
    throw new LodestoneError('LS_CONFIG_INVALID', `user: the switch to ${runAs.user}:${runAs.group} did not hold`);
  }
}

/**
 * Before the switch, as root: makes the files and directories the workers write their own, as
 * nginx's master does for its logs and temp directories. A log file is created if missing and
 * handed over (so a worker can reopen it after logrotate renamed it: the primary recreates it
 * first on SIGUSR2); a directory (bytecode, cached bodies) is created if missing and handed over
 * with the files already in it. Nothing is changed when it already belongs to the user.
 */
export function handOver(runAs: RunAs, paths: { files: readonly string[]; dirs: readonly string[] }): void {
  for (const file of paths.files) {
    fs.closeSync(fs.openSync(file, 'a', 0o640));
    chownIfNeeded(file, runAs);
  }
  for (const dir of paths.dirs) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o750 });
    chownIfNeeded(dir, runAs);
    for (const name of fs.readdirSync(dir)) {
      const entry = path.join(dir, name);
      // lstat: a link planted in the directory must not hand over what it points to.
      if (fs.lstatSync(entry).isFile()) chownIfNeeded(entry, runAs);
    }
  }
}

function chownIfNeeded(file: string, runAs: RunAs): void {
  const st = fs.lstatSync(file);
  if (st.uid !== runAs.uid || st.gid !== runAs.gid) fs.lchownSync(file, runAs.uid, runAs.gid);
}

/**
 * Parses `socketOwner` ("USER", "USER:GROUP" or ":GROUP", like php-fpm's listen.owner and
 * listen.group) to ids; -1 keeps that id. Defaults to the run-as user and group.
 */
export function resolveSocketOwner(spec: string, field: string): { uid: number; gid: number } {
  const [user, group] = spec.split(':', 2) as [string, string | undefined];
  let uid = -1;
  let gid = -1;
  if (user !== '') uid = known('passwd', user, field).id;
  if (group !== undefined && group !== '') gid = known('group', group, field).id;
  if (uid === -1 && gid === -1) throw new LodestoneError('LS_CONFIG_INVALID', `${field}: expected USER, USER:GROUP or :GROUP`);
  return { uid, gid };
}

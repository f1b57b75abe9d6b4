// Preloaded first into every benchmarked server (bare and instrumented alike): answers `stats` on
// stdin with this process's CPU time and memory on stdout (plus the CPU time of all its descendant
// processes, for node:cluster and the runner), and `gc` with a full collection first when node runs
// with --expose-gc. Nothing runs per request. Only the top process answers: workers forked from it
// inherit the claim and stay silent.
'use strict';
const { readdirSync, readFileSync } = require('node:fs');

if (!process.env.BENCH_PROBE_CLAIMED) {
  process.env.BENCH_PROBE_CLAIMED = String(process.pid);
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const cmd = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (cmd === 'gc' && typeof global.gc === 'function') { global.gc(); global.gc(); }
      // in-process A/B: the preload's HTTP observer unsubscribed / subscribed again
      const observer = globalThis[Symbol.for('prefork-otel.single')]?.observer;
      if (cmd.startsWith('observer-off') && observer) observer.stop();
      if (cmd.startsWith('observer-on') && observer) observer.start();
      const cpu = process.cpuUsage();
      // '…-lite' commands (the in-process A/B windows) skip the /proc reads
      const lite = cmd.endsWith('-lite');
      const mem = process.memoryUsage();
      const tree = lite ? { pids: [], cpuUs: 0, userUs: 0, rss: 0 } : descendantsCpu(process.pid);
      const priv = lite ? { private: NaN, pss: NaN } : privateMemory();
      process.stdout.write(`@@probe ${JSON.stringify({
        cmd, pid: process.pid, observer: observer !== undefined, cpuUs: cpu.user + cpu.system, userUs: cpu.user, sysUs: cpu.system,
        rss: mem.rss, privateBytes: priv.private, pssBytes: priv.pss, heapUsed: mem.heapUsed, heapTotal: mem.heapTotal, external: mem.external,
        children: tree.pids, childrenCpuUs: tree.cpuUs, childrenUserUs: tree.userUs, childrenRss: tree.rss,
      })}\n`);
    }
  });
  process.stdin.on('end', () => process.exit(0));
}

/** utime/stime (clock ticks, 100 Hz on Linux) and RSS of every live descendant, from /proc */
function descendantsCpu(root) {
  const out = { pids: [], cpuUs: 0, userUs: 0, rss: 0 };
  let entries;
  try {
    entries = readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return out;
  }
  const parent = new Map();
  const stat = new Map();
  for (const p of entries) {
    try {
      const s = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(p), Number(f[1]));
      stat.set(Number(p), { utime: Number(f[11]), stime: Number(f[12]), rssPages: Number(f[21]) });
    } catch { /* gone */ }
  }
  const isDesc = (pid) => {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) if (p === root) return true;
    return false;
  };
  for (const [pid, s] of stat) {
    if (!isDesc(pid)) continue;
    out.pids.push(pid);
    out.cpuUs += (s.utime + s.stime) * 10_000;
    out.userUs += s.utime * 10_000;
    out.rss += s.rssPages * 4096;
  }
  return out;
}

/** Private (unshared) and proportional memory of this process from /proc/self/smaps_rollup (Linux) */
function privateMemory() {
  try {
    const t = readFileSync('/proc/self/smaps_rollup', 'utf8');
    const kb = (k) => Number((new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(t) ?? [])[1] ?? NaN) * 1024;
    return { private: kb('Private_Clean') + kb('Private_Dirty'), pss: kb('Pss') };
  } catch {
    return { private: NaN, pss: NaN };
  }
}

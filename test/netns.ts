// Test hosts in Linux network namespaces, made and removed by the test itself: a namespace per
// host, each with one veth into a bridge in a switch namespace (or a router between two), and
// addresses from one private /24 that exists only inside them. Names are unique per run (two
// copies of the suite can run at once), and everything is removed on success, failure and
// timeout alike: by the test's teardown, and by an exit hook if the test never gets there.
// Needs root and iproute2 (and keepalived for VRRP): without them a test skips with one line,
// except under CI (CI=true), where .ci/run installs them and the test must run.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Test } from 'tap';

/** Why namespace tests cannot run here, or null when they can. */
export function cannotRun(needs: readonly string[] = []): string | null {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  for (const command of ['ip', ...needs]) {
    try {
      execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    } catch {
      return `needs ${command}`;
    }
  }
  return null;
}

/** Skips `t` with one line when namespace tests cannot run, unless under CI (then they fail).
 *  True when the test is not to run. */
export function skipUnlessAble(t: Test, needs: readonly string[] = []): boolean {
  const why = cannotRun(needs);
  if (why === null) return false;
  if (process.env.CI === 'true') t.fail(`namespace test cannot run under CI: ${why}`);
  else t.plan(0, why);
  return true;
}

const live = new Set<Lab>();
process.on('exit', () => {
  for (const lab of live) lab.removeSync();
});

/** One test's namespaces, links and processes. */
export class Lab {
  /** Prefix of every name: short (interface names have 15 characters), unique per run. */
  readonly prefix = `f${randomBytes(3).toString('hex')}`;
  private readonly namespaces: string[] = [];
  private readonly processes = new Set<ChildProcess>();

  constructor() {
    live.add(this);
  }

  /** The namespace of host `name`. */
  ns(name: string): string {
    return `${this.prefix}${name}`;
  }

  /** Runs `ip` (or another command) in namespace `ns`, or in this one for null. */
  run(ns: string | null, command: string, ...args: string[]): string {
    const full = ns === null ? [command, ...args] : ['ip', 'netns', 'exec', ns, command, ...args];
    return execFileSync(full[0], full.slice(1), {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  /** A new namespace with loopback up. */
  addHost(name: string): string {
    const ns = this.ns(name);
    this.run(null, 'ip', 'netns', 'add', ns);
    this.namespaces.push(ns);
    this.run(ns, 'ip', 'link', 'set', 'lo', 'up');
    return ns;
  }

  /** A bridge named br0 in the namespace of host `name`. */
  addBridge(name: string): void {
    const ns = this.ns(name);
    this.run(ns, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
    this.run(ns, 'ip', 'link', 'set', 'br0', 'up');
  }

  /**
   * Links host `host` (its interface `ifname`, with `address`, a CIDR) to the bridge of host
   * `bridge`, through a veth pair.
   */
  plug(host: string, ifname: string, address: string, bridge: string): void {
    const a = `${this.prefix}${host}${ifname}`.slice(0, 15);
    const b = `${a.slice(0, 14)}p`;
    this.run(null, 'ip', 'link', 'add', a, 'type', 'veth', 'peer', 'name', b);
    this.run(null, 'ip', 'link', 'set', a, 'netns', this.ns(host));
    this.run(null, 'ip', 'link', 'set', b, 'netns', this.ns(bridge));
    this.run(this.ns(host), 'ip', 'link', 'set', a, 'name', ifname);
    this.run(this.ns(host), 'ip', 'addr', 'add', address, 'dev', ifname);
    this.run(this.ns(host), 'ip', 'link', 'set', ifname, 'up');
    this.run(this.ns(bridge), 'ip', 'link', 'set', b, 'master', 'br0');
    this.run(this.ns(bridge), 'ip', 'link', 'set', b, 'up');
  }

  /** A sysctl in host `name`'s namespace (net.* settings are per namespace). */
  sysctl(name: string, setting: string): void {
    this.run(this.ns(name), 'sysctl', '-q', '-w', setting);
  }

  /** Starts `command` in host `name`'s namespace, in a process group of its own (so a kill
   *  reaches whatever it forks). stdout and stderr are piped. */
  spawn(name: string, command: string, args: readonly string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.ns(name), command, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    child.on('error', () => {});
    this.processes.add(child);
    child.once('exit', () => this.processes.delete(child));
    return child;
  }

  /** Kills a process started by spawn (and its group) with `signal`; resolves once it exited. */
  async kill(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      process.kill(-(child.pid as number), signal);
    } catch {
      // already gone
    }
    await exited;
  }

  /** Everything stopped and removed (async: processes get SIGTERM, then SIGKILL). */
  async remove(): Promise<void> {
    for (const child of [...this.processes]) {
      const gone = this.kill(child, 'SIGTERM');
      const timer = setTimeout(() => {
        try {
          process.kill(-(child.pid as number), 'SIGKILL');
        } catch {
          // gone
        }
      }, 2000);
      await gone;
      clearTimeout(timer);
    }
    this.removeSync();
  }

  /** The last resort at exit: kill every process group, delete every namespace. */
  removeSync(): void {
    for (const child of this.processes) {
      try {
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {
        // gone
      }
    }
    this.processes.clear();
    for (const ns of this.namespaces.splice(0)) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
    live.delete(this);
  }
}

/** Lines of a child's stdout, as they come, to a callback. */
export function onLines(child: ChildProcess, each: (line: string) => void): void {
  let pending = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    pending += chunk;
    let nl = pending.indexOf('\n');
    while (nl >= 0) {
      each(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
      nl = pending.indexOf('\n');
    }
  });
}

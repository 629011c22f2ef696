// Agent checks (HAProxy's agent protocol): every backend with an agent port is asked, each
// --agent-interval, for one line of words about itself, and the words are applied: `N%` (weight
// as a share of the configured one), `ready` / `drain` / `maint` (admin state), `up` / `down` /
// `stopped` / `fail` with an optional `#reason` (operational state), `maxconn:N`.
// Invariants: an agent that cannot be reached or answers nothing changes nothing (it is not a
// health failure); what an agent set lives on the member only until a reload or restart
// (pool.reconfigure clears it); a reply is read to its first newline, at most MAX_AGENT_REPLY
// bytes, within the health timeout.

import net from 'node:net';
import { printableText } from '../config/parse.ts';
import type { Logger } from '../log.ts';
import type { AgentEffect, Member, Pool } from './pool.ts';
import { connectFailure } from './probes.ts';
import type { Round } from './rounds.ts';
import { Rounds } from './rounds.ts';

/** The longest agent reply read: a line of a few words. */
export const MAX_AGENT_REPLY = 1024;

/** Largest weight share an agent may ask for, in percent (the weight is capped anyway). */
const MAX_PERCENT = 25_600;

interface AgentTask extends Round {
  readonly pool: Pool;
  readonly member: Member;
  port: number;
  intervalMs: number;
  /** The agent could not be asked last time: logged once, until it answers again. */
  unreachable: boolean;
}

/**
 * The effect of one agent reply on what the agent had set before: each word changes what it
 * names; what it does not name stays. Unknown words are ignored (and shown in `said`).
 */
export function applyAgentReply(reply: string, before: AgentEffect): AgentEffect {
  const line = reply.split(/\r?\n/, 1)[0];
  const sharp = line.indexOf('#');
  const words = (sharp < 0 ? line : line.slice(0, sharp)).split(/[\s,]+/).filter(Boolean);
  const reason = sharp < 0 ? '' : line.slice(sharp + 1).trim();
  const next: AgentEffect = { ...before, said: printableText(line.trim()) };
  for (const raw of words) {
    const word = raw.toLowerCase();
    const percent = /^(\d+)%$/.exec(word);
    const maxconn = /^maxconn:(\d+)$/.exec(word);
    if (percent !== null) next.weightPercent = Math.min(MAX_PERCENT, Number(percent[1]));
    else if (maxconn !== null) next.maxconn = Math.min(1_000_000, Number(maxconn[1]));
    else if (word === 'ready') next.admin = null;
    else if (word === 'drain' || word === 'maint') next.admin = word;
    else if (word === 'up') next.down = null;
    else if (word === 'down' || word === 'stopped' || word === 'fail') {
      next.down = reason === '' ? word : `${word} (${printableText(reason)})`;
    }
  }
  return next;
}

/** True when the two effects differ in anything but `said`. */
function changes(a: AgentEffect, b: AgentEffect): boolean {
  return (
    a.weightPercent !== b.weightPercent ||
    a.admin !== b.admin ||
    a.down !== b.down ||
    a.maxconn !== b.maxconn
  );
}

export class AgentChecker {
  private readonly rounds = new Rounds<AgentTask>((task) => this.ask(task));
  private readonly log: Logger;
  private stopped = false;

  constructor(log: Logger) {
    this.log = log;
  }

  /** Takes the current pools: every backend with an agent port is asked, the first time at once. */
  sync(pools: readonly Pool[]): void {
    this.rounds.follow(
      pools,
      (pool, member) => member.config.agentPort ?? pool.config.agent.port,
      (pool, member, port, now) => ({
        pool,
        member,
        port,
        intervalMs: pool.config.agent.intervalMs,
        nextAt: now,
        busy: false,
        unreachable: false,
      }),
      (task, pool, port) => {
        task.port = port;
        task.intervalMs = pool.config.agent.intervalMs;
      },
    );
  }

  stop(): void {
    this.stopped = true;
    this.rounds.stop();
  }

  private ask(task: AgentTask): void {
    task.busy = true;
    const { pool, member } = task;
    const config = pool.config;
    const socket = net.connect({ host: member.config.host, port: task.port });
    // Bytes, decoded once the line is whole: a character split across reads stays whole.
    let reply = Buffer.alloc(0);
    let over = false;
    // Only a complete line is an answer: `30%` cut to `3` by a timeout is none.
    const timer = setTimeout(
      () => finish(null, reply.length === 0 ? 'no answer in time' : 'no complete line in time'),
      config.health.timeoutMs,
    );
    timer.unref();
    const finish = (answer: string | null, why: string) => {
      if (over) return;
      over = true;
      clearTimeout(timer);
      socket.destroy();
      task.busy = false;
      if (this.stopped || !this.rounds.all.includes(task)) return;
      if (answer === null) this.unreachable(task, why);
      else this.answered(task, answer);
    };
    socket.once('connect', () => {
      if (config.agent.send !== null) socket.write(Buffer.from(config.agent.send, 'latin1'));
    });
    socket.on('data', (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk.subarray(0, MAX_AGENT_REPLY + 1 - reply.length)]);
      const nl = reply.indexOf(0x0a);
      if (nl >= 0 && nl <= MAX_AGENT_REPLY) finish(reply.toString('utf8', 0, nl), '');
      else if (reply.length > MAX_AGENT_REPLY) {
        finish(null, `no newline in ${MAX_AGENT_REPLY} bytes`);
      }
    });
    // Closing the connection after the line ends it, as a newline does.
    socket.once('end', () =>
      finish(reply.length === 0 ? null : reply.toString('utf8'), 'closed without a word'),
    );
    socket.once('error', (err: NodeJS.ErrnoException) => finish(null, connectFailure(err)));
  }

  private unreachable(task: AgentTask, why: string): void {
    const { pool, member } = task;
    member.agent = { ...member.agent, said: `(unreachable: ${why})` };
    if (task.unreachable) return;
    task.unreachable = true;
    this.log.warn(
      { frontend: pool.name, backend: member.config.name, reason: why },
      'agent unreachable: what it last set stays',
    );
  }

  private answered(task: AgentTask, reply: string): void {
    const { pool, member } = task;
    task.unreachable = false;
    const next = applyAgentReply(reply, member.agent);
    const changed = changes(member.agent, next);
    pool.setAgent(member, next);
    if (changed) {
      this.log.info(
        { frontend: pool.name, backend: member.config.name, said: next.said },
        'agent changed backend',
      );
    }
  }
}

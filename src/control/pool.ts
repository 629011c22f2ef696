// One pool as the control plane keeps it: its backends, their shared table and counters, and
// which backend sits in which table slot. Every frontend on the pool (control/frontend.ts) picks
// over this one table, so live counts, maxconn, health, agents and load reports are the pool's,
// whatever the number of frontends. Changes (reload, admin commands) are applied here and then
// sent to every worker, which rebuilds its schedulers and swaps them in.
// Invariants: a slot keeps its backend, counters and live count for as long as that backend is in
// the pool; a removed backend stops being pickable at once but keeps its slot until its last
// connection has finished in every worker; a new backend becomes pickable only after every worker
// has acknowledged its address (acknowledged); a freed slot is cleared before it is reused.

import type { BackendConfig, FrontendConfig } from '../config/types.ts';
import type { SharedCounters } from '../shared/counters.ts';
import { allocateCounters, clearBackend } from '../shared/counters.ts';
import type { PoolMember } from '../shared/messages.ts';
import type { BackendTable, SharedTable } from '../shared/table.ts';
import {
  AGENT_DOWN,
  allocateTable,
  BACKUP,
  DRAINING,
  ENABLED,
  MAX_BACKENDS,
  MAX_WEIGHT,
  openTable,
  TABLE_SLOTS,
  UP,
} from '../shared/table.ts';
import type { AdminChoice } from '../stats/commands.ts';

/** A backend in a slot of a pool. Main-thread bookkeeping; workers see only `PoolMember`. */
export interface Member {
  /** Unique over the process's life: tells a worker that a slot has a new occupant. */
  readonly id: number;
  readonly index: number;
  config: BackendConfig;
  /** Removed from the pool: takes no new connection, leaves when its last one closes. */
  leaving: boolean;
  /** Every worker has seen the removal, so no pick of it can still be in flight. */
  settled: boolean;
  /** Waiting for every worker to learn its address before it can be picked. */
  joining: boolean;
  /** Health transitions (up -> down and back) so far. */
  transitions: number;
  /** What an operator asked: enabled, disabled (no new connection) or draining. */
  admin: AdminChoice;
  /** When its slow-start ramp began (performance.now()), or null when not ramping. */
  rampStart: number | null;
  /** What its agent last set; a reload or restart starts again from none. */
  agent: AgentEffect;
  /** Its last health probe, or null before the first. */
  check: CheckResult | null;
  /** Its last load report (also in the table while fresh), or null. */
  load: LoadReport | null;
  /** Why its load could not be read last time, or null. */
  loadError: string | null;
}

export type { AdminChoice };

/** What a backend's agent (HAProxy's agent protocol) has set, on top of the config. */
export interface AgentEffect {
  /** Effective weight as a share of the configured one, in percent; null: 100. */
  weightPercent: number | null;
  /** `drain` or `maint` (taken out like an operator's drain or disable); null: ready. */
  admin: 'drain' | 'maint' | null;
  /** `down`, `stopped` or `fail`, with the agent's `#reason` if any; null: up (as far as the
   *  agent goes: health checks still decide). */
  down: string | null;
  /** maxconn the agent set; null: the configured one. */
  maxconn: number | null;
  /** The agent's last answer, as it said it (or why it could not be asked); null: not yet. */
  said: string | null;
}

/** One health probe: its verdict, in words (`HTTP 503`, `connect refused`), and how long. */
export interface CheckResult {
  readonly ok: boolean;
  readonly result: string;
  readonly ms: number;
}

/** A backend's load as it last reported it on its metrics page. */
export interface LoadReport {
  readonly value: number;
  /** performance.now() when it was read. */
  readonly at: number;
}

export function noAgentEffect(): AgentEffect {
  return { weightPercent: null, admin: null, down: null, maxconn: null, said: null };
}

/** What a reconfigure changed, by backend name, for the log. */
export interface PoolChanges {
  added: string[];
  removed: string[];
  changed: string[];
}

let nextMemberId = 1;

/**
 * Table weights are the configured ones times this (as HAProxy's BE_WEIGHT_SCALE), so a slow-start
 * ramp has steps even for weight 1. Every scheduler compares weights only with each other.
 */
export const WEIGHT_SCALE = 16;

/** Where a slow-start ramp begins: this share of the full weight. */
const RAMP_FLOOR = 0.05;

let nextPoolId = 1;

export class Pool {
  /** Unique over the process's life: tells a worker that a frontend moved to another pool. */
  readonly id = nextPoolId++;
  /** The config of a frontend on this pool: its pool-side settings (backends, algorithm, health,
   *  agent, load, connect timeout, retries, send-proxy) are the pool's, the same in each of its
   *  frontends; nothing else of it is read here. */
  config: FrontendConfig;
  readonly shared: SharedTable;
  /** Every slot, whatever the size in use. */
  readonly table: BackendTable;
  /** The per-backend counters (connections, failures, bytes), every frontend's together. */
  readonly counters: SharedCounters;
  readonly slots: (Member | null)[] = [];

  /**
   * `startUp`: backends count as up from the start (the first start, as HAProxy does), instead of
   * waiting for a first probe (a pool added by a reload).
   */
  constructor(config: FrontendConfig, workers: number, startUp: boolean) {
    this.config = config;
    this.shared = allocateTable(TABLE_SLOTS);
    this.table = openTable(this.shared);
    this.table.state.fill(0);
    this.counters = allocateCounters(workers, TABLE_SLOTS);
    for (const backend of config.backends) this.add(backend);
    if (startUp) {
      for (const member of this.members()) {
        member.joining = false;
        Atomics.or(this.table.state, member.index, UP);
        this.applyAdmin(member);
      }
    }
  }

  get name(): string {
    return this.config.pool;
  }

  /** Backends in the pool, leaving ones included, in slot order. */
  members(): Member[] {
    return this.slots.filter((m): m is Member => m !== null);
  }

  /** The backend named `name` that is not leaving, or null. */
  find(name: string): Member | null {
    for (const member of this.slots) {
      if (member !== null && !member.leaving && member.config.name === name) return member;
    }
    return null;
  }

  /** The members by slot, as a worker receives them. */
  workerMembers(): (PoolMember | null)[] {
    return this.slots.map((m) =>
      m === null ? null : { id: m.id, config: m.config, leaving: m.leaving },
    );
  }

  /**
   * Puts a backend in a free slot, not yet pickable: acknowledged() makes it so once every worker
   * knows its address. Throws when the pool is full.
   */
  add(config: BackendConfig): Member {
    let index = this.slots.indexOf(null);
    if (index < 0) {
      // roomFor() said there is room; this would be a bug, not bad input.
      if (this.slots.length >= TABLE_SLOTS) throw new Error(`pool ${this.name}: no free slot`);
      index = this.slots.length;
      this.slots.push(null);
    }
    // The slot's last connection has finished (sweepLeaving), so `active` is 0 already.
    clearBackend(this.counters, index);
    Atomics.store(this.table.weight, index, config.weight * WEIGHT_SCALE);
    Atomics.store(this.table.maxconn, index, config.maxconn);
    Atomics.store(this.table.state, index, config.backup ? BACKUP : 0);
    this.table.load[index] = Number.NaN;
    const member: Member = {
      id: nextMemberId++,
      index,
      config,
      leaving: false,
      settled: false,
      joining: true,
      transitions: 0,
      admin: 'enabled',
      rampStart: null,
      agent: noAgentEffect(),
      check: null,
      load: null,
      loadError: null,
    };
    this.slots[index] = member;
    return member;
  }

  /** Takes the backend out of picking at once; its live connections run to their end. */
  remove(member: Member): void {
    member.leaving = true;
    Atomics.or(this.table.state, member.index, DRAINING);
  }

  /** Called once every worker has the current members: joining backends become pickable (with
   *  health checks on they wait, down, for their first good probe), and removals are settled. */
  acknowledged(): void {
    for (const member of this.members()) {
      if (member.leaving) member.settled = true;
      if (!member.joining) continue;
      member.joining = false;
      if (!this.config.health.enabled) {
        Atomics.or(this.table.state, member.index, UP);
        this.startRamp(member);
      }
      this.applyAdmin(member);
    }
  }

  /** An operator's enable, disable or drain; a joining backend takes it when it joins. */
  setAdmin(member: Member, admin: AdminChoice): void {
    member.admin = admin;
    if (!member.joining && !member.leaving) this.applyAdmin(member);
  }

  /**
   * The stricter of the operator's choice and the agent's: an agent's `ready` lifts only what the
   * agent set, never an operator's disable or drain (nor does an operator's enable lift the
   * agent's maint: the agent says it again at its next answer anyway).
   */
  private applyAdmin(member: Member): void {
    const state = this.table.state;
    const i = member.index;
    const agent = member.agent.admin;
    const admin =
      member.admin === 'disabled' || agent === 'maint'
        ? 'disabled'
        : member.admin === 'draining' || agent === 'drain'
          ? 'draining'
          : 'enabled';
    if (admin === 'enabled') {
      Atomics.and(state, i, ~DRAINING);
      Atomics.or(state, i, ENABLED);
    } else if (admin === 'disabled') {
      Atomics.and(state, i, ~(ENABLED | DRAINING));
    } else {
      Atomics.or(state, i, ENABLED | DRAINING);
    }
  }

  /** Sets a backend's weight at once (an operator's `set weight`). */
  setWeight(member: Member, weight: number): void {
    member.config = { ...member.config, weight };
    Atomics.store(this.table.weight, member.index, this.effectiveWeight(member, performance.now()));
  }

  /**
   * What an agent said, applied: weight share, admin state, down or not, maxconn. Only what
   * changed is written.
   */
  setAgent(member: Member, effect: AgentEffect): void {
    const before = member.agent;
    member.agent = effect;
    if (member.leaving) return;
    const i = member.index;
    if (effect.weightPercent !== before.weightPercent) {
      Atomics.store(this.table.weight, i, this.effectiveWeight(member, performance.now()));
    }
    if (effect.maxconn !== before.maxconn) {
      Atomics.store(this.table.maxconn, i, effect.maxconn ?? member.config.maxconn);
    }
    if (effect.admin !== before.admin && !member.joining) this.applyAdmin(member);
    if (effect.down !== null) Atomics.or(this.table.state, i, AGENT_DOWN);
    else Atomics.and(this.table.state, i, ~AGENT_DOWN);
  }

  /** A load report read from the backend's metrics page (null: none, failed or stale). */
  setLoad(member: Member, value: number | null): void {
    const i = member.index;
    if (value === null) {
      member.load = null;
      this.table.load[i] = Number.NaN;
      return;
    }
    member.load = { value, at: performance.now() };
    // The base first: a pick between the two writes sees the new base with the old load, which
    // undercounts for an instant; the other order would count twice.
    Atomics.store(this.table.loadBase, i, Atomics.load(this.table.sent, i));
    this.table.load[i] = value;
  }

  /** The weight the schedulers see: the configured one, scaled, times the agent's share (at
   *  most MAX_WEIGHT's), and ramped while in slow start. */
  effectiveWeight(member: Member, now: number): number {
    const percent = member.agent.weightPercent;
    const configured = member.config.weight * WEIGHT_SCALE;
    const full =
      percent === null
        ? configured
        : Math.min(MAX_WEIGHT * WEIGHT_SCALE, Math.round((configured * percent) / 100));
    if (member.rampStart === null || full === 0) return full;
    const fraction = (now - member.rampStart) / member.config.slowstartMs;
    if (fraction >= 1) return full;
    return Math.max(1, Math.round(full * Math.max(RAMP_FLOOR, fraction)));
  }

  /** Starts the slow-start ramp (the backend just came up or joined), if it has one. */
  startRamp(member: Member): void {
    if (member.config.slowstartMs <= 0) return;
    member.rampStart = performance.now();
    Atomics.store(this.table.weight, member.index, this.effectiveWeight(member, member.rampStart));
  }

  /** Moves every ramping backend's weight along; called every 100 ms. */
  ramp(now: number): void {
    for (const member of this.members()) {
      if (member.rampStart === null) continue;
      Atomics.store(this.table.weight, member.index, this.effectiveWeight(member, now));
      if (now - member.rampStart >= member.config.slowstartMs) member.rampStart = null;
    }
  }

  /** Frees the slots of settled leaving backends whose last connection has finished; returns
   *  their names. */
  sweepLeaving(): string[] {
    const gone: string[] = [];
    for (let i = 0; i < this.slots.length; i++) {
      const member = this.slots[i];
      if (member === null || !member.settled || Atomics.load(this.table.active, i) > 0) continue;
      Atomics.store(this.table.state, i, 0);
      this.slots[i] = null;
      gone.push(member.config.name);
    }
    while (this.slots.length > 0 && this.slots[this.slots.length - 1] === null) this.slots.pop();
    return gone;
  }

  /** Live connections of this pool's backends, leaving ones included. */
  active(): number {
    let total = 0;
    for (let i = 0; i < this.slots.length; i++) total += Atomics.load(this.table.active, i);
    return total;
  }

  /**
   * Whether reconfigure(config) fits: null when it does, else why not, in one line. Checked
   * before anything changes, so a change that does not fit changes nothing. A removed backend
   * keeps its slot until its last connection finishes, so what fits depends on what drains.
   */
  roomFor(config: FrontendConfig): string | null {
    if (config.backends.length > MAX_BACKENDS) {
      return `pool ${this.name}: ${config.backends.length} backends; a pool has at most ${MAX_BACKENDS}`;
    }
    let kept = 0;
    for (const b of config.backends) {
      const member = this.find(b.name);
      if (member !== null && keeps(member, b)) kept++;
    }
    const needed = this.members().length + config.backends.length - kept;
    if (needed <= TABLE_SLOTS) return null;
    const draining = this.members().filter((m) => m.leaving).length;
    return `pool ${this.name}: no room for ${config.backends.length - kept} new backends while ${draining} removed ones still drain (${TABLE_SLOTS} slots); retry once they have drained`;
  }

  /**
   * Applies a new config of this pool in place (roomFor() must have said it fits): a backend
   * keeps its slot (and counters) when its name and address are unchanged, and takes its new
   * weight and backup flag; others leave or join. Admin state (disabled, drained) of a kept
   * backend is kept.
   */
  reconfigure(config: FrontendConfig): PoolChanges {
    const changes: PoolChanges = { added: [], removed: [], changed: [] };
    const wanted = new Map(config.backends.map((b) => [b.name, b]));
    for (const member of this.members()) {
      if (member.leaving) continue;
      const next = wanted.get(member.config.name);
      if (next === undefined || !keeps(member, next)) {
        this.remove(member);
        changes.removed.push(member.config.name);
        continue;
      }
      wanted.delete(next.name);
      const previous = member.config;
      member.config = next;
      // A reload starts from the config: the agent, if any, says its piece again at its next
      // answer.
      this.setAgent(member, noAgentEffect());
      if (
        next.weight !== previous.weight ||
        next.backup !== previous.backup ||
        next.maxconn !== previous.maxconn
      ) {
        Atomics.store(
          this.table.weight,
          member.index,
          this.effectiveWeight(member, performance.now()),
        );
        Atomics.store(this.table.maxconn, member.index, next.maxconn);
        if (next.backup) Atomics.or(this.table.state, member.index, BACKUP);
        else Atomics.and(this.table.state, member.index, ~BACKUP);
        changes.changed.push(next.name);
      }
    }
    this.config = config;
    for (const backend of wanted.values()) {
      this.add(backend);
      changes.added.push(backend.name);
    }
    // Without probes nothing would ever bring a down backend back: count them all as up.
    if (!config.health.enabled) {
      for (const member of this.members()) {
        if (!member.joining) Atomics.or(this.table.state, member.index, UP);
      }
    }
    return changes;
  }
}

/** Whether `member` stays in its slot as `next`: the same address (the name matched already). */
function keeps(member: Member, next: BackendConfig): boolean {
  return next.host === member.config.host && next.port === member.config.port;
}

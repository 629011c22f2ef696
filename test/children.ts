// The processes tests start (fulcrum, clients, probes) run without tap's process-info hook. tap
// puts `--import=.../@tapjs/processinfo/...` in NODE_OPTIONS to follow every child for coverage;
// coverage is off here, and the hook more than doubled the CPU of each fulcrum start (1.2-1.4 s
// against 0.5-0.6 s with two workers: its loader hooks see every module of every thread), which
// a suite starting fulcrum a few hundred times pays in minutes. Imported for its effect, first.

const HOOK = /"?--import=[^"\s]*@tapjs[\\/]processinfo[^"\s]*"?/g;

const options = process.env.NODE_OPTIONS;
if (options !== undefined) {
  const kept = options.replace(HOOK, '').trim();
  if (kept === '') delete process.env.NODE_OPTIONS;
  else process.env.NODE_OPTIONS = kept;
}

/**
 * Telling a dead server from a busy one (the Python SDK does the same).
 *
 * The keepalive ticks every `keepaliveTick(interval, timeout)`, PINGs after
 * `interval` of silence and declares the server dead after `timeout` of it.
 * Two things make a live server look silent:
 *
 * - Our own backlog: a PING probe queued behind our own reliable frames is
 *   echoed only after they are through. Buffer space the browser frees for
 *   that backlog (`bufferedamountlow`) needs the server's acknowledgements,
 *   so it counts as a sign of life (`Session.peerProgress`).
 * - Our own stalls: background tabs get their timers throttled to once a
 *   minute, and a late tick says nothing about the server. A late tick adds
 *   at most one `interval` to the silence.
 */
export class SilenceClock {
  /** Milliseconds of silence counted so far. */
  silentFor = 0;
  private lastProgress: string | undefined;
  private lastTick: number | undefined;

  constructor(
    readonly interval: number,
    readonly timeout: number,
  ) {}

  /** Record the server's `progress` at `now` (ms); true once it is presumed dead. */
  tick(progress: string, now: number): boolean {
    if (this.lastTick === undefined || progress !== this.lastProgress) {
      this.silentFor = 0;
    } else {
      this.silentFor += Math.min(now - this.lastTick, this.interval);
    }
    this.lastProgress = progress;
    this.lastTick = now;
    return this.silentFor > this.timeout;
  }
}

/**
 * How often the keepalive looks at the silence (ms): fine enough to PING on
 * time and to give the server up within a quarter of `timeout` after it.
 */
export function keepaliveTick(interval: number, timeout: number): number {
  return Math.min(interval, timeout / 4);
}

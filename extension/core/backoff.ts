/** Exponential backoff with jitter, so a bench that restarts is not hit by every client at the same instant. */
export class Backoff {
  private attempt = 0;

  constructor(private readonly initialMs = 250, private readonly maxMs = 10_000, private readonly random = Math.random) {}

  /** Delay before the next attempt: initial·2^n capped at max, then ±30 % jitter. */
  next(): number {
    const base = Math.min(this.maxMs, this.initialMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return Math.round(base * (0.7 + 0.6 * this.random()));
  }

  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}

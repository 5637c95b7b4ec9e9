/**
 * The progress line on stderr: which step runs and roughly how long is left. On a terminal one
 * line is rewritten every second; in a log file (CI) each step gets one line instead, so the log
 * stays readable.
 */
export interface Step {
  label: string;
  seconds: number;
}

// Start-up, connection set-up and parsing around each wrk run, measured at well under a second.
const OVERHEAD_PER_STEP_S = 0.5;

export class Progress {
  private readonly tty = process.stderr.isTTY;
  private index = -1;
  private stepStarted = 0;
  private timer: NodeJS.Timeout | null = null;
  private steps: readonly Step[] = [];
  /** Which scenario of the suite runs, e.g. "[scenario 2/6] ": the line's prefix. */
  scenario = '';

  /** Sets the steps of the next scenario: the "time left" is counted over them. */
  plan(steps: readonly Step[]): void {
    this.steps = steps;
    this.index = -1;
  }

  /** Marks the start of step `index` of the plan. */
  begin(index: number): void {
    this.index = index;
    this.stepStarted = Date.now();
    if (!this.tty) {
      process.stderr.write(`[bench] ${this.line()}\n`);
      return;
    }
    this.draw();
    if (this.timer === null) {
      this.timer = setInterval(() => this.draw(), 1000);
      this.timer.unref();
    }
  }

  /** Shows `label` as the current step when there is no plan to count time over (micro-benchmarks). */
  status(label: string): void {
    this.plan([{ label, seconds: 0 }]);
    if (this.tty) process.stderr.write(`\r\x1b[K[bench] ${this.scenario}${label}`);
    else process.stderr.write(`[bench] ${this.scenario}${label}\n`);
  }

  /** Prints a message without garbling the progress line. */
  note(text: string): void {
    this.clear();
    process.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
    if (this.tty && this.index >= 0) this.draw();
  }

  /** Removes the progress line (before the report, or on the way out). */
  done(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.clear();
    this.index = -1;
  }

  private clear(): void {
    if (this.tty) process.stderr.write('\r\x1b[K');
  }

  private draw(): void {
    process.stderr.write(`\r\x1b[K[bench] ${this.line()}`);
  }

  private line(): string {
    const step = this.steps[this.index];
    if (!step) return '';
    const elapsed = (Date.now() - this.stepStarted) / 1000;
    const inStep = Math.max(0, step.seconds - elapsed);
    const later = this.steps.slice(this.index + 1).reduce((s, x) => s + x.seconds + OVERHEAD_PER_STEP_S, 0);
    return `${this.scenario}${this.index + 1}/${this.steps.length} ${step.label}: ${Math.ceil(inStep)} s left in this run, ~${clock(inStep + later)} left in this scenario`;
  }
}

function clock(seconds: number): string {
  const s = Math.ceil(seconds);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/**
 * Notices that the storage went away while a job uses the volume. Without it a write to a LUN
 * whose portal is gone blocks in the kernel (D state) for as long as libiscsi keeps trying to
 * reconnect — forever — and a `sync` anywhere on the machine blocks with it.
 *
 * Every second it opens a TCP connection to the portal and (userspace) checks the daemon. After
 * `ioTimeoutSeconds` without the portal, or at once when the daemon died, it trips: the verdict
 * is kept as an IscsiPortalLostError and the userspace daemon is killed, so every blocked I/O
 * returns EIO and the job ends with the watchdog's message. The kernel strategy gets the same
 * bound from node.session.timeo.replacement_timeout (kernel.ts).
 */
import { IscsiPortalLostError } from './errors.js';
import { pidAlive, probePortal } from './system.js';
import { killQsd } from './userspace.js';
import { parsePortal, type AttachState, type IscsiTargetConfig } from './types.js';

export class PortalWatchdog {
  failure: IscsiPortalLostError | undefined;
  private timer: NodeJS.Timeout | undefined;
  private downSince: number | undefined;
  private lastError = '';
  private probing = false;

  constructor(private readonly t: IscsiTargetConfig, private readonly state: AttachState, private readonly intervalMs = 1000) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Trip now (an I/O error was seen on the volume). */
  trip(what: string, cause?: unknown): IscsiPortalLostError {
    if (!this.failure) {
      this.failure = new IscsiPortalLostError(this.t, what, cause ? { cause } : undefined);
      this.stop();
      if (this.state.strategy === 'userspace') killQsd(this.state.qsdPid);
    }
    return this.failure;
  }

  private async tick(): Promise<void> {
    if (this.probing || this.failure) return;
    this.probing = true;
    try {
      if (this.state.strategy === 'userspace' && !pidAlive(this.state.qsdPid)) {
        this.trip(`qemu-storage-daemon (pid ${this.state.qsdPid}) serving ${this.t.iqn} from ${this.t.portal} exited`);
        return;
      }
      const err = await probePortal(this.t.portal, Math.min(2000, this.t.ioTimeoutSeconds * 1000));
      const now = Date.now();
      if (!err) {
        this.downSince = undefined;
        return;
      }
      this.lastError = err;
      this.downSince ??= now;
      const downMs = now - this.downSince;
      if (downMs >= this.t.ioTimeoutSeconds * 1000) {
        this.trip(`portal ${this.t.portal} unreachable for ${Math.round(downMs / 1000)} s (${this.lastError}) while writing to ${this.t.iqn} lun ${this.t.lun}`);
      }
    } finally {
      this.probing = false;
    }
  }
}

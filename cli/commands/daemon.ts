import { systemSleepClock } from '../../engine/runtime/index.js';
import { acquireDaemonLock } from '../../engine/jobs/index.js';
import type { CliContext, OutputOptions } from '../context.js';
import { configDir, type ConfigOptions } from '../config-option.js';
import { buildRuntime, stateDir, type StateOptions } from '../wiring.js';
import type { CommandSpec } from '../command.js';

type Opts = ConfigOptions & StateOptions & OutputOptions;

export const daemonCommand: CommandSpec<Opts> = {
  name: 'daemon',
  summary: 'run the policies on their schedules until stopped (SIGTERM stops cleanly, SIGHUP reloads policies); one daemon per state folder',
  options: [],
  exitCodes: '0 stopped by SIGTERM/SIGINT · 1 failed, or another daemon runs on this state folder · 2 bad config or state folder',
  async run(ctx: CliContext, opts: Opts) {
    const log = (line: string): void => {
      ctx.stdout.write(`${new Date().toISOString()} ${line}\n`);
    };
    const config = configDir(ctx, opts);
    const state = stateDir(ctx, opts);
    const lock = await acquireDaemonLock(state, {
      clock: systemSleepClock,
      onLost: (holder) => log(`the daemon lock of ${state} was taken over${holder ? ` by pid ${holder.pid} on ${holder.host}` : ''} (this daemon's heartbeat had stopped): two daemons may now run on this state folder - stop one`),
    });
    let rt: Awaited<ReturnType<typeof buildRuntime>> | undefined;
    const onHup = (): void => {
      log('SIGHUP: reloading policies');
      rt?.daemon.reload();
    };
    const stop = (): void => void rt?.daemon.stop('abandon');
    try {
      if (lock.replaced) log(`took over the daemon lock of pid ${lock.replaced.pid} on ${lock.replaced.host} (that daemon is gone)`);
      rt = await buildRuntime({ configDir: config, stateDir: state, clock: systemSleepClock, hostname: ctx.hostname, log });
      process.on('SIGHUP', onHup);
      // A signal that came while drctl was starting has already fired: stop() before start()
      // starts nothing.
      if (ctx.signal.aborted) stop();
      else ctx.signal.addEventListener('abort', stop, { once: true });
      await rt.daemon.start();
      await rt.daemon.run();
      await rt.daemon.idle();
    } finally {
      process.off('SIGHUP', onHup);
      ctx.signal.removeEventListener('abort', stop);
      await lock.release();
    }
    log('daemon stopped');
    return 0;
  },
};

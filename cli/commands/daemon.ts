import { systemSleepClock } from '../../engine/runtime/index.js';
import type { CliContext, OutputOptions } from '../context.js';
import { configDir, type ConfigOptions } from '../config-option.js';
import { buildRuntime, stateDir, type StateOptions } from '../wiring.js';
import type { CommandSpec } from '../command.js';

type Opts = ConfigOptions & StateOptions & OutputOptions;

export const daemonCommand: CommandSpec<Opts> = {
  name: 'daemon',
  summary: 'run the policies on their schedules until stopped (SIGTERM stops cleanly, SIGHUP reloads policies)',
  options: [],
  exitCodes: '0 stopped by SIGTERM/SIGINT · 1 failed · 2 bad config folder',
  async run(ctx: CliContext, opts: Opts) {
    const log = (line: string): void => {
      ctx.stdout.write(`${new Date().toISOString()} ${line}\n`);
    };
    const rt = await buildRuntime({ configDir: configDir(ctx, opts), stateDir: stateDir(ctx, opts), clock: systemSleepClock, hostname: ctx.hostname, log });
    const onHup = (): void => {
      log('SIGHUP: reloading policies');
      rt.daemon.reload();
    };
    process.on('SIGHUP', onHup);
    const stop = (): void => {
      log('stopping: running jobs are abandoned cleanly (nothing half-committed)');
      void rt.daemon.stop('abandon');
    };
    ctx.signal.addEventListener('abort', stop, { once: true });
    try {
      await rt.daemon.start();
      await rt.daemon.run();
      await rt.daemon.idle();
    } finally {
      process.off('SIGHUP', onHup);
    }
    log('daemon stopped');
    return 0;
  },
};

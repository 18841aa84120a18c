/**
 * How drctl reaches a host: run a command, open a Unix socket on the host (an NBD export),
 * count the bytes that crossed. Over SSH in production and tests; in-process for a host
 * without `ssh:` (the machine drctl runs on).
 */
import type { Duplex } from 'node:stream';
import { DrError, ExitCode } from '../errors.js';

export interface RemoteResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  stdin?: string | Buffer;
  /** Fails with HostUnreachableError after this long (default 120 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface HostTransport {
  /** "host hv1 (root@10.0.0.5:22)": used in messages. */
  readonly label: string;
  /** Run a shell command line on the host. Reconnects (with backoff) when the connection dropped. */
  exec(command: string, opts?: ExecOptions): Promise<RemoteResult>;
  /** A byte stream to a Unix socket on the host (OpenSSH streamlocal forwarding). */
  openUnixSocket(path: string): Promise<Duplex>;
  /** Bytes received from / sent to the host so far (on the wire, including SSH framing). */
  readonly bytesIn: number;
  readonly bytesOut: number;
  close(): Promise<void>;
}

export class HostUnreachableError extends DrError {
  readonly code = 'HOST_UNREACHABLE';
  readonly exitCode = ExitCode.failed;
  constructor(label: string, why: string, options?: { cause?: unknown }) {
    super(`${label}: ${why}`, 'check that the host is up and sshd answers (`ssh -p PORT USER@HOST true`), then run the job again', options);
  }
}

/**
 * sshd refused the login (wrong user, key not in authorized_keys, no key configured). Final:
 * a retry sends the same key again. A configuration error: nothing was changed.
 */
export class SshAuthError extends DrError {
  readonly code = 'SSH_AUTH';
  readonly exitCode = ExitCode.usage;
  constructor(label: string, user: string, keyFile: string | undefined, where: string, options?: { cause?: unknown }) {
    super(keyFile
      ? `${label}: authentication failed - the host did not accept the key in ssh.keyFile ${keyFile} for user ${user}`
      : `${label}: authentication failed for user ${user} - no ssh.keyFile is configured`,
    `check ssh.user and ssh.keyFile${where}, and that the public half of the key is in ~${user}/.ssh/authorized_keys on the host (\`ssh -i KEYFILE -p PORT ${user}@HOST true\` shows the same)`, options);
  }
}

export class RemoteCommandError extends DrError {
  readonly code = 'REMOTE_COMMAND';
  readonly exitCode = ExitCode.failed;
}

/** Quote one argument for a POSIX shell. */
export function shq(s: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

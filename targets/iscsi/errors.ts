import { DrError, ExitCode } from '../../engine/errors.js';
import type { IscsiTargetConfig } from './types.js';

/** The portal refused our CHAP credentials. */
export class IscsiAuthError extends DrError {
  readonly code = 'ISCSI_AUTH';
  readonly exitCode = ExitCode.failed;
  constructor(t: IscsiTargetConfig, detail: string) {
    super(`target ${t.name}: authentication failed at ${t.portal} for ${t.iqn}${t.chap ? ` (CHAP user ${t.chap.user})` : ' (no CHAP configured)'} - ${detail}`,
      t.chap ? `check chap.user in ${t.file} and the secret in ${t.chap.secretFile} against the storage's account` : `the storage requires CHAP: add chap: { user, secretFile } to ${t.file}`);
  }
}

/** The LUN could not be attached, mounted, formatted or detached. */
export class IscsiAttachError extends DrError {
  readonly code = 'ISCSI_ATTACH';
  readonly exitCode = ExitCode.failed;
}

/** The portal went away while a job was using the volume (the watchdog's verdict). */
export class IscsiPortalLostError extends DrError {
  readonly code = 'ISCSI_PORTAL_LOST';
  readonly exitCode = ExitCode.failed;
  constructor(t: IscsiTargetConfig, what: string, options?: { cause?: unknown }) {
    super(`target ${t.name}: ${what} - the job was stopped, nothing was committed, older points are intact`,
      `bring the storage at ${t.portal} back, then \`drctl target attach ${t.name}\` (it checks the filesystem) and \`drctl check --target ${t.name}\``, options);
  }
}

/**
 * The LUN or its filesystem is in use — attached under another target name or state folder,
 * mounted by another machine, or used by processes here — so nothing was changed.
 */
export class IscsiInUseError extends DrError {
  readonly code = 'ISCSI_IN_USE';
  readonly exitCode = ExitCode.failed;
}

/**
 * What the config folder holds once it is validated. Every object carries the absolute path of
 * the file it came from, so a later error (a failed backup, a full target) can name that file.
 */
import type { ConfigProblem } from '../engine/errors.js';
import type { RetentionRules } from './retention.js';

export type { ConfigProblem };

export type PolicySource =
  | { kind: 'vm'; name: string; vm: string; host: string; files?: string[]; quiesce: 'required' | 'preferred' }
  | { kind: 'image'; name: string; image: string }
  | { kind: 'path'; name: string; path: string };

export interface Policy {
  name: string;
  /** Absolute. */
  file: string;
  /** Cron expression (5 fields, node-cron syntax). */
  schedule: string;
  /** IANA zone the schedule is read in. */
  timezone: string;
  target: string;
  fallbackTarget?: string;
  /** Cron expression for prune, same zone. */
  prune: string;
  sources: PolicySource[];
  retention: RetentionRules;
}

export type TargetConfig =
  | { name: string; file: string; type: 'local'; path: string }
  | {
    name: string; file: string; type: 'iscsi';
    /** host:port */
    portal: string; iqn: string; lun: number;
    chap?: { user: string; secretFile: string };
    filesystem: 'ext4' | 'xfs'; mountpoint: string;
    attach: 'kernel' | 'userspace' | 'auto'; keepAttached: boolean;
    /** Seconds the portal may be unreachable before a running job fails (default 30). */
    ioTimeoutSeconds: number;
    /** This machine's initiator IQN; default: the system's (kernel) or a drctl one (userspace). */
    initiatorName?: string;
  };

export interface HostConfig {
  name: string;
  file: string;
  driver: 'libvirt' | 'hyperv' | 'local';
  /** Absent: the host is this machine. */
  ssh?: { host: string; port: number; user: string; keyFile?: string; hostKey?: string; knownHosts?: string };
  /** libvirt only; defaults to qemu:///system. */
  uri?: string;
}

export interface LoadedConfig {
  dir: string;
  policies: Policy[];
  /** Policy files in policies/ that have problems, with the name they claim (else their file name). */
  invalidPolicies: { name: string; file: string }[];
  targets: Map<string, TargetConfig>;
  hosts: Map<string, HostConfig>;
  problems: ConfigProblem[];
}

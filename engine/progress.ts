/** Progress of a long operation, reported by the engine and rendered by the CLI. */
export interface Progress {
  /** What is happening ("backup", "restore", "check"). */
  phase: string;
  doneBytes: number;
  /** 0 when unknown. */
  totalBytes: number;
  /** Current item (file path, disk name), if any. */
  item?: string;
}
export type ProgressFn = (p: Progress) => void;

#!/usr/bin/env bash
# One-line benchmark: drctl side by side with restic and borg on the ../shared/bench data,
# in one run on this machine, then bench/RESULTS.md.
#   npm run bench                      (= scripts/setup.sh --bench && bench/run.sh)
# Env: BENCH_DATA=/tmp/peerbench/data  dataset folder (made by make-dataset.sh when missing)
#      BENCH_WORK=/tmp/peerbench/run   scratch folder (repos, restores, logs)
#      REPS=1  TOOLS="borg-lz4 restic borg-zstd3 drctl" (in this order, see step 1)  BIG=1 (8 GiB image RSS check; 0 skips)
#      SETTLE=300 (seconds of pause before each tool's run, see step 1)
#      PRUNE=1 (bench/prune.sh: prune of 100 points of a 1 GiB image; 0 skips)
#      LIBVIRT=1 (bench/libvirt.mjs: VM backup/restore over SSH on the lab guest; 0 skips)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
DATA=${BENCH_DATA:-/tmp/peerbench/data}
WORK=${BENCH_WORK:-/tmp/peerbench/run}
export DRCTL_JS=$ROOT/dist/cli/main.js
[ -f "$DRCTL_JS" ] || { echo "bench: build first (scripts/setup.sh)" >&2; exit 2; }
[ -d "$SHARED" ] || { echo "bench: $SHARED not found (the shared bench scripts sit next to this repository)" >&2; exit 2; }

if [ ! -f "$DATA/MANIFEST" ]; then
  echo "bench: making the dataset in $DATA (~1 min)" >&2
  "$SHARED/make-dataset.sh" "$DATA" >&2
fi
rm -rf "$WORK"; mkdir -p "$WORK"

# 1. The shared peer run: restic, borg and drctl through the same steps, one peers.sh run per
#    tool with a pause between them. Why: this VM's root filesystem is ext4 without a journal,
#    which skips inodes freed in the last 60 s (360 s while their inode-table block is dirty)
#    when it allocates new ones, checking them one by one (recently_deleted() in
#    fs/ext4/ialloc.c). peers.sh deletes each tool's ~60,000-file work folder at its end, so
#    in one interleaved run every tool but the first restored its tree while the kernel
#    scanned past those inodes (`cp -a` of the tree: 4.4 s settled, 16.5 s right after such a
#    delete). `sync` + SETTLE seconds before each tool gives all the same start. 70 s was not
#    enough: the next tool allocates its inodes in the same inode-table blocks, which makes
#    them dirty, and then ext4 skips inodes deleted in the last 360 s; a tool's tree restore
#    comes ~80 s into its run, so SETTLE defaults to 300 (~15 min more for the four tools).
#    The same for free memory: on this VM, writing into fresh page-cache pages costs 0.1 to
#    2 s of system time per 737 MiB depending on the state of free memory (free page
#    reporting hands freed memory back to the host; see WRITE_PIECE_BYTES in
#    engine/runtime/fs.ts), and every tool writes ~700 MiB per backup. So, when run as root,
#    the page cache is dropped before each tool and the dataset read back in (warm cache).
#    With a shorter pause, whichever tool ran after another tool's run restored with about
#    twice the system time of the one that ran first (bench/NOTES.md). borg-lz4, which the
#    goals do not compare, goes first, so that restic and drctl run in the same condition.
TOOL_LIST=${TOOLS:-"borg-lz4 restic borg-zstd3 drctl"}
same_memory_state() {
  [ -w /proc/sys/vm/drop_caches ] || return 0
  sync
  echo 1 > /proc/sys/vm/drop_caches
  cat "$DATA/disk.img" "$DATA/disk.gen2.img" > /dev/null
  find "$DATA/tree" "$DATA/tree.gen2" -type f -exec cat {} + > /dev/null
}
mkdir -p "$WORK/peers"
first=1
for tool in $TOOL_LIST; do
  sync; sleep "${SETTLE:-300}"
  same_memory_state
  REPS=${REPS:-1} TOOLS=$tool ADAPTERS="$HERE/drctl-adapter.sh" "$SHARED/peers.sh" "$DATA" "$WORK/peers-$tool" >&2
  if [ $first = 1 ]; then
    cp "$WORK/peers-$tool/results.tsv" "$WORK/peers/results.tsv"
    sed "s/tools=[^ ]*/tools=${TOOL_LIST// /,}/" "$WORK/peers-$tool/info.txt" > "$WORK/peers/info.txt"
    first=0
  else
    tail -n +2 "$WORK/peers-$tool/results.tsv" >> "$WORK/peers/results.tsv"
  fi
done

# 2. drctl-only steps the peer script has no slot for.
EXTRA=$WORK/extra.tsv
printf 'tool\tstep\trep\twall_s\tuser_s\tsys_s\tmaxrss_kb\trepo_bytes\tsrc_bytes\tstatus\n' > "$EXTRA"
timed() { # step repo src_bytes cmd...
  local step=$1 repo=$2 bytes=$3; shift 3
  sync
  local rc=0
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.out" "$@" >>"$WORK/extra.log" 2>&1 || rc=$?
  read -r wall user sys rss < <(tail -n1 "$WORK/time.out")
  printf 'drctl\t%s\t1\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$step" "$wall" "$user" "$sys" "$rss" \
    "$(du -sb "$repo" | cut -f1)" "$bytes" "$([ $rc = 0 ] && echo ok || echo "FAIL(rc=$rc)")" >> "$EXTRA"
  echo "   drctl $step ${wall}s" >&2
}
D="$DRCTL_JS"   # the bin as users run it (its first line sets V8 flags)
X=$WORK/cbt; mkdir -p "$X/src"
cp --sparse=always "$DATA/disk.img" "$X/src/disk.img"
$D init --repo "$X/repo" -q
$D backup --repo "$X/repo" --image "$X/src/disk.img" --name disk.img -q
cp -a "$X/repo" "$X/repo1"   # for the same backup in a running process, below
node "$HERE/changed-extents.mjs" "$DATA/disk.img" "$DATA/disk.gen2.img" > "$X/extents.json"   # what a dirty bitmap gives; untimed
cp --sparse=always "$DATA/disk.gen2.img" "$X/src/disk.img"
timed img-backup2-cbt "$X/repo" "$(stat -c %s "$DATA/disk.gen2.img")" \
  $D backup --repo "$X/repo" --image "$X/src/disk.img" --name disk.img --changed-extents "$X/extents.json" -q
$D restore --repo "$X/repo" latest --name disk.img --to "$X/out.img" -q
cmp "$X/out.img" "$DATA/disk.gen2.img" && echo "   drctl img-backup2-cbt verify: ok" >&2
# The same backup in a process that is already running (as the daemon runs its jobs): median
# of 5 after a warm-up, each on a fresh copy of the repository (bench/warm-cbt.mjs).
WARM=$(node "$HERE/warm-cbt.mjs" "$X/repo1" "$X/src/disk.img" "$X/extents.json" 5 2>>"$WORK/extra.log" | node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>console.log(JSON.parse(s).median_s.toFixed(2)))') \
  && printf 'drctl\timg-backup2-cbt-warm\t1\t%s\tNaN\tNaN\tNaN\tNaN\t%s\tok\n' "$WARM" "$(stat -c %s "$DATA/disk.gen2.img")" >> "$EXTRA" \
  && echo "   drctl img-backup2-cbt-warm ${WARM}s" >&2
rm -rf "$X"

if [ "${BIG:-1}" = 1 ]; then
  # Peak RSS must not grow with the disk: the same steps on an 8 GiB image.
  [ -f "$DATA/disk8.img" ] || python3 "$SHARED/dataset.py" --seed 42 disk "$DATA/disk8.img" "$(numfmt --from=iec 8G)" >&2
  X=$WORK/big; mkdir -p "$X"
  cat "$DATA/disk8.img" > /dev/null # warm cache, like the 2 GiB image (step 1 may have dropped it)
  $D init --repo "$X/repo" -q
  timed img8-backup1 "$X/repo" "$(stat -c %s "$DATA/disk8.img")" $D backup --repo "$X/repo" --image "$DATA/disk8.img" --name disk8 -q
  timed img8-restore "$X/repo" "$(stat -c %s "$DATA/disk8.img")" $D restore --repo "$X/repo" latest --to "$X/out.img" -q
  cmp "$X/out.img" "$DATA/disk8.img" && echo "   drctl img8 verify: ok" >&2
  rm -f "$X/out.img"
  timed img8-check "$X/repo" "$(du -sb "$X/repo" | cut -f1)" $D check --repo "$X/repo" --read-data -q
  rm -rf "$X"
fi

# 3. Prune at scale (100 points of a 1 GiB image) → bench/PRUNE.md, carried into the report.
if [ "${PRUNE:-1}" = 1 ]; then bash "$HERE/prune.sh" >&2; fi

# 4. Backup onto an iSCSI volume (tgtd on loopback, userspace attach) vs a local folder → bench/ISCSI.md.
if [ "${ISCSI:-1}" = 1 ]; then BENCH_DATA=$DATA bash "$HERE/iscsi.sh" >&2; fi

# 5. VM backup and restore over SSH (libvirt lab guest) vs `ssh host cat` → bench/LIBVIRT.md.
if [ "${LIBVIRT:-1}" = 1 ]; then LIBVIRT_MD=$HERE/LIBVIRT.md node "$HERE/libvirt.mjs" >&2; fi

node "$HERE/report.mjs" "$WORK/peers/results.tsv" "$EXTRA" "$WORK/peers/info.txt" > "$HERE/RESULTS.md"
echo "bench: wrote bench/RESULTS.md" >&2

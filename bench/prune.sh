#!/usr/bin/env bash
# Prune at scale: a repository with 100 recovery points of a 1 GiB disk image (each point
# changes 16 MiB, backed up through a changed-extent list as a dirty bitmap would give it),
# retention `generations: 42`, then `drctl prune`. Measures wall time, peak RSS (goal: under
# 300 MiB, independent of the data size) and how long backups were held off; writes
# bench/PRUNE.md, which bench/report.mjs carries into bench/RESULTS.md.
#   bash bench/prune.sh            (after scripts/setup.sh; needs /usr/bin/time)
# Env: PRUNE_WORK=/tmp/drctl-prune-bench  POINTS=100  IMAGE_MIB=1024  CHANGE_MIB=16
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DRCTL="node $HERE/../dist/cli/main.js"
WORK=${PRUNE_WORK:-/tmp/drctl-prune-bench}
POINTS=${POINTS:-100}
IMAGE_MIB=${IMAGE_MIB:-1024}
CHANGE_MIB=${CHANGE_MIB:-16}
KEEP=42
[ -x /usr/bin/time ] || { echo "prune.sh: needs GNU time (/usr/bin/time; scripts/setup.sh --bench installs it)" >&2; exit 2; }
[ -f "$HERE/../dist/cli/main.js" ] || { echo "prune.sh: build first (scripts/setup.sh)" >&2; exit 2; }

rm -rf "$WORK"; mkdir -p "$WORK"
REPO=$WORK/repo IMG=$WORK/disk.img
$DRCTL init --repo "$REPO" --quiet
echo "prune.sh: 1 GiB image, $POINTS points, $CHANGE_MIB MiB changed per point" >&2
head -c "$((IMAGE_MIB * 1024 * 1024))" /dev/urandom > "$IMG"
t0=$(date +%s.%N)
for i in $(seq 1 "$POINTS"); do
  if [ "$i" -gt 1 ]; then
    # A different place each time (stride 7 x CHANGE_MIB through the disk).
    off=$(( ((i * 7) % (IMAGE_MIB / CHANGE_MIB)) * CHANGE_MIB ))
    dd if=/dev/urandom of="$IMG" bs=1M count="$CHANGE_MIB" seek="$off" conv=notrunc status=none
    printf '[{"offset":%d,"length":%d}]\n' $((off * 1048576)) $((CHANGE_MIB * 1048576)) > "$WORK/changed.json"
    $DRCTL backup --repo "$REPO" --image "$IMG" --name disk --changed-extents "$WORK/changed.json" --quiet
  else
    $DRCTL backup --repo "$REPO" --image "$IMG" --name disk --quiet
  fi
  [ $((i % 20)) = 0 ] && echo "   $i points" >&2
done
t_fill=$(echo "$(date +%s.%N) - $t0" | bc)
points=$($DRCTL points --repo "$REPO" --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).length))')
before=$(du -sb "$REPO" | cut -f1)
$DRCTL forget --repo "$REPO" --name disk --keep-last $KEEP --quiet

run_prune() { # label
  sync
  /usr/bin/time -f '%e %M' -o "$WORK/time.out" $DRCTL prune --repo "$REPO" --json > "$WORK/prune-$1.json"
  read -r wall rss < "$WORK/time.out"
  echo "$wall $rss"
}
read -r wall1 rss1 < <(run_prune first)
after=$(du -sb "$REPO" | cut -f1)
read -r wall2 rss2 < <(run_prune again)
field() { node -e "const r=require('$1');console.log(r['$2'])"; }
ex1=$(field "$WORK/prune-first.json" exclusiveMs)
freed=$(field "$WORK/prune-first.json" bytesFreed)
repacked=$(field "$WORK/prune-first.json" packsRepacked)
deleted=$(field "$WORK/prune-first.json" packsDeleted)
$DRCTL check --repo "$REPO" --quiet
$DRCTL restore --repo "$REPO" latest --name disk --to "$WORK/restored.img" --quiet
cmp "$IMG" "$WORK/restored.img"

mib() { echo "scale=1; $1 / 1048576" | bc; }
goal=$([ "$rss1" -lt $((300 * 1024)) ] && echo "met" || echo "MISSED")
cat > "$HERE/PRUNE.md" <<EOF
## Prune at scale (bench/prune.sh, $(date -u +%Y-%m-%d))

$points points of a ${IMAGE_MIB} MiB random image, ${CHANGE_MIB} MiB changed per point (filled in ${t_fill%.*} s),
\`forget --keep-last $KEEP\`, then \`drctl prune\` (repack threshold 25 %). $(nproc) cores.

| run | wall | peak RSS | packs deleted / repacked | freed | backups held off (final step) |
|---|---:|---:|---:|---:|---:|
| first prune | ${wall1} s | $((rss1 / 1024)) MiB | $deleted / $repacked | $(mib "$freed") MiB | ${ex1} ms |
| second prune (nothing to do) | ${wall2} s | $((rss2 / 1024)) MiB | 0 / 0 | 0 MiB | - |

Repository $(mib "$before") MiB before, $(mib "$after") MiB after. Goal "peak RSS under 300 MiB": **$goal**.
After prune \`check\` passed and the newest point restored byte-identical (cmp).
EOF
echo "prune.sh: wrote $HERE/PRUNE.md" >&2
cat "$HERE/PRUNE.md"

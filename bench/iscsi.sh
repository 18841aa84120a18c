#!/usr/bin/env bash
# Backup throughput onto an iSCSI volume vs onto a local folder: the same image, one run.
# tgtd serves a sparse file-backed LUN on 127.0.0.1 (CHAP on); drctl attaches it with its
# userspace strategy (qemu-storage-daemon + libiscsi → FUSE → loop → ext4), exactly as a
# policy run does (attach, back up, detach). Writes bench/ISCSI.md (bench/report.mjs appends it
# to bench/RESULTS.md). Needs root and scripts/setup.sh's packages.
# Env: BENCH_DATA=/tmp/peerbench/data  (made by ../shared/bench/make-dataset.sh when missing)
#      BENCH_ISCSI_WORK=/tmp/iscsibench  IMAGE=$BENCH_DATA/disk.img  PORT=13260
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
DATA=${BENCH_DATA:-/tmp/peerbench/data}
WORK=${BENCH_ISCSI_WORK:-/tmp/iscsibench}
PORT=${PORT:-13260}
CTL=$((PORT % 28000 + 2000))
DRCTL="node $ROOT/dist/cli/main.js"
[ -f "$ROOT/dist/cli/main.js" ] || { echo "bench: build first (scripts/setup.sh)" >&2; exit 2; }
if [ ! -f "$DATA/MANIFEST" ]; then "$SHARED/make-dataset.sh" "$DATA" >&2; fi
IMAGE=${IMAGE:-$DATA/disk.img}
IQN=iqn.2026-01.invalid.drctl:bench

rm -rf "$WORK"; mkdir -p "$WORK/config/targets" "$WORK/config/policies" "$WORK/state"
TGTD_PID=
cleanup() {
  $DRCTL target detach san --force --config "$WORK/config" --state "$WORK/state" >/dev/null 2>&1 || true
  [ -n "$TGTD_PID" ] && kill -9 "$TGTD_PID" 2>/dev/null || true
  rm -f "/var/run/tgtd/socket.$CTL" "/var/run/tgtd/socket.$CTL.lock"
}
trap cleanup EXIT

# The LUN: twice the image, sparse.
truncate -s $(( $(stat -c %s "$IMAGE") * 2 )) "$WORK/lun.img"
tgtd -f -C "$CTL" --iscsi "portal=127.0.0.1:$PORT" >"$WORK/tgtd.log" 2>&1 &
TGTD_PID=$!
disown "$TGTD_PID"
adm() { tgtadm -C "$CTL" --lld iscsi "$@"; }
for _ in $(seq 50); do adm --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
SECRET=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
adm --op new --mode target --tid 1 -T "$IQN"
adm --op new --mode logicalunit --tid 1 --lun 1 -b "$WORK/lun.img"
adm --op bind --mode target --tid 1 -I ALL
adm --op new --mode account --user bench --password "$SECRET"
adm --op bind --mode account --tid 1 --user bench
printf '%s\n' "$SECRET" > "$WORK/chap.secret"; chmod 600 "$WORK/chap.secret"

cat > "$WORK/config/targets/san.yaml" <<YAML
type: iscsi
portal: 127.0.0.1:$PORT
iqn: $IQN
lun: 1
chap: { user: bench, secretFile: $WORK/chap.secret }
filesystem: ext4
mountpoint: $WORK/mnt
attach: userspace
YAML
printf 'type: local\npath: %s\n' "$WORK/local" > "$WORK/config/targets/local.yaml"
for t in san local; do
  printf 'name: to-%s\ntarget: %s\nsources:\n  - image: %s\n    name: disk\nretention: { generations: 3 }\n' "$t" "$t" "$IMAGE" > "$WORK/config/policies/to-$t.yaml"
done
O=(--config "$WORK/config" --state "$WORK/state")
$DRCTL target format san --format "${O[@]}" >&2
# Jobs never create a local target's folder (a missing one is an unmounted volume); init does.
$DRCTL init --target local "${O[@]}" >&2

cat "$IMAGE" >/dev/null   # same warm page cache for both runs
declare -A WALL RSS STORED
for t in local san; do
  sync; echo "bench: backing up $(basename "$IMAGE") onto $t" >&2
  /usr/bin/time -f '%e %M' -o "$WORK/time.$t" $DRCTL backup --policy "to-$t" --json "${O[@]}" > "$WORK/out.$t.json"
  read -r WALL[$t] RSS[$t] < "$WORK/time.$t"
  STORED[$t]=$(node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1]));const x=j.jobs[0];if(x.state!=="ok")throw new Error(x.error);console.log(x.bytesNew)' "$WORK/out.$t.json")
done
# Attach + detach alone (part of the iSCSI run's wall time).
/usr/bin/time -f '%e' -o "$WORK/time.attach" $DRCTL target attach san "${O[@]}" >/dev/null
$DRCTL check --target san "${O[@]}" >&2
/usr/bin/time -f '%e' -o "$WORK/time.detach" $DRCTL target detach san "${O[@]}" >/dev/null

SIZE=$(stat -c %s "$IMAGE")
mbs() { echo "scale=1; $SIZE / 1000000 / $1" | bc; }
L=$(mbs "${WALL[local]}"); S=$(mbs "${WALL[san]}")
RATIO=$(printf "%.2f" "$(echo "scale=4; $S / $L" | bc)")
cat > "$HERE/ISCSI.md" <<MD
## Backup onto an iSCSI volume vs a local folder

\`bench/iscsi.sh\`, one run on $(date -u +%Y-%m-%d) ($(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg) at the end): \`drctl backup --policy\` of
\`$(basename "$IMAGE")\` ($(echo "scale=2; $SIZE / 1073741824" | bc) GiB, the shared bench image, warm page cache)
onto a local folder and onto an ext4 volume on an iSCSI LUN served by tgtd on 127.0.0.1 with CHAP,
attached with the userspace strategy (qemu-storage-daemon + libiscsi → FUSE → loop device).
The iSCSI run includes attaching and detaching the volume. MB/s = image size / wall time.

| target | wall s | MB/s | new data (before compression) | peak RSS |
|---|---|---|---|---|
| local folder | ${WALL[local]} | $L | $(( STORED[local] / 1048576 )) MiB | $(( RSS[local] / 1024 )) MiB |
| iSCSI (userspace attach) | ${WALL[san]} | $S | $(( STORED[san] / 1048576 )) MiB | $(( RSS[san] / 1024 )) MiB |

iSCSI / local throughput: **${RATIO}×**. Attach (login, fsck, mount) took $(cat "$WORK/time.attach") s, detach
$(cat "$WORK/time.detach") s. Peak RSS is drctl's; qemu-storage-daemon runs as its own process.
MD
cat "$HERE/ISCSI.md"

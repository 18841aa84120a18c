// Throughput of VM-level backup and restore over SSH on loopback, against the plain
// `ssh host cat disk > /dev/null` limit on the same machine. Boots the lab guest with a second,
// 1 GiB data disk (768 MiB random data written on the host before boot), then:
//   full backup (drctl backup --vm), restore as a new VM (drctl restore --as), and
//   ssh cat of the raw image file. Run after `npm run build`: node bench/libvirt.mjs
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, chmodSync, copyFileSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSshd } from '../dist/test/support/sshd.js';
import { ensureLibvirtd, labCache, domainXml, waitForAgent, removeVm } from '../dist/test/support/libvirt-lab.js';

const MiB = 1024 * 1024;
const DATA_MIB = Number(process.env.BENCH_DATA_MIB ?? 768);
const dir = mkdtempSync(join(tmpdir(), 'drctl-bench-lv-'));
chmodSync(dir, 0o755);
const sshd = await startSshd();
await ensureLibvirtd();
const cache = labCache();
for (const f of ['vmlinuz', 'initrd.gz', 'data.qcow2']) { copyFileSync(join(cache, f), join(dir, f)); chmodSync(join(dir, f), 0o644); }
execFileSync('sh', ['-c', `head -c ${DATA_MIB * MiB} /dev/urandom > ${dir}/big.raw && truncate -s 1G ${dir}/big.raw && chmod 644 ${dir}/big.raw`]);
const name = `drctl-bench-${process.pid}`;
const xml = domainXml(name, dir, join(dir, 'data.qcow2')).replace('</disk>',
  `</disk>\n    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${dir}/big.qcow2'/><target dev='vdb' bus='virtio'/></disk>`);
execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(dir, 'big.raw'), join(dir, 'big.qcow2')]);
writeFileSync(join(dir, 'domain.xml'), xml);
const config = join(dir, 'config');
mkdirSync(join(config, 'hosts'), { recursive: true });
writeFileSync(join(config, 'hosts', 'hv1.yaml'), `driver: libvirt\nssh:\n  host: 127.0.0.1\n  port: ${sshd.port}\n  user: ${sshd.user}\n  keyFile: ${sshd.keyFile}\n  hostKey: "${sshd.hostKey}"\n`);
const repo = join(dir, 'repo');
const drctl = (...a) => JSON.parse(execFileSync(process.execPath, ['dist/cli/main.js', ...a, '--config', config, '--repo', repo, '--json'], { encoding: 'utf8', maxBuffer: 64 * MiB }));
const mbps = (bytes, ms) => (bytes / MiB / (ms / 1000)).toFixed(0);
try {
  execFileSync(process.execPath, ['dist/cli/main.js', 'init', '--repo', repo, '-q']);
  execFileSync('virsh', ['-c', 'qemu:///system', 'define', join(dir, 'domain.xml')]);
  execFileSync('virsh', ['-c', 'qemu:///system', 'start', name]);
  await waitForAgent(name);
  // the ssh limit: the raw file holding the same data, read with OpenSSH on the same machine
  const sshArgs = ['-o', 'UserKnownHostsFile=' + sshd.knownHosts, '-o', 'LogLevel=ERROR', '-i', sshd.keyFile, '-p', String(sshd.port), `${sshd.user}@127.0.0.1`];
  let t0 = performance.now();
  spawnSync('sh', ['-c', `ssh ${sshArgs.join(' ')} cat ${dir}/big.raw > /dev/null`]);
  const catMs = performance.now() - t0;
  t0 = performance.now();
  const p = drctl('backup', '--vm', name, '--host', 'hv1');
  const backupMs = performance.now() - t0;
  mkdirSync(join(dir, 'restored'));
  chmodSync(join(dir, 'restored'), 0o755);
  t0 = performance.now();
  const r = drctl('restore', p.id, '--host', 'hv1', '--as', `${name}-r`, '--storage', join(dir, 'restored'));
  const restoreMs = performance.now() - t0;
  const rows = [
    ['ssh host cat 1 GiB raw image (768 MiB data) > /dev/null', `${mbps(1024 * MiB, catMs)} MB/s`, `${(catMs / 1000).toFixed(1)} s`],
    [`drctl backup --vm (full, 2 disks, ${(p.stats.readBytes / MiB).toFixed(0)} MiB read, ${(p.stats.wireBytes / MiB).toFixed(0)} MiB over SSH)`, `${mbps(p.stats.readBytes, backupMs)} MB/s`, `${(backupMs / 1000).toFixed(1)} s`],
    [`drctl restore --as (new VM, ${(r.bytesWritten / MiB).toFixed(0)} MiB written through qemu-nbd)`, `${mbps(r.bytesWritten, restoreMs)} MB/s`, `${(restoreMs / 1000).toFixed(1)} s`],
  ];
  const table = ['| what | throughput | time |', '|---|---|---|', ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');
  console.log(table);
  // With LIBVIRT_MD=FILE (bench/run.sh), the measured block of that page is replaced.
  if (process.env.LIBVIRT_MD) {
    const page = readFileSync(process.env.LIBVIRT_MD, 'utf8');
    const block = `<!-- measured -->\nRun ${new Date().toISOString().slice(0, 10)}, ${availableParallelism()} cores, load average ${loadavg()[0].toFixed(2)} at the end:\n\n${table}\n<!-- /measured -->`;
    writeFileSync(process.env.LIBVIRT_MD, page.replace(/<!-- measured -->[\s\S]*<!-- \/measured -->/, block));
  }
} finally {
  removeVm(`${name}-r`);
  removeVm(name);
  await sshd.stop();
  rmSync(dir, { recursive: true, force: true });
}
